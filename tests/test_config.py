import argparse
import json

import pytest

import config
from config import ModelConfig, TrainConfig
from presets import get_preset


@pytest.mark.parametrize("kwargs, words", [
    (dict(num_q_heads=3, num_kv_heads=2), ["num_q_heads=3", "num_kv_heads=2"]),
    (dict(dim=0), ["dim=0", "positive"]),
    (dict(norm_type="batchnorm"), ["norm_type='batchnorm'", "rmsnorm"]),
    (dict(head_dim=15, pos_encoding="rope"), ["head_dim=15", "even"]),
    (dict(tokenizer="gpt4"), ["tokenizer='gpt4'", "bpe2048"]),
    (dict(model_type="mamba"), ["model_type='mamba'", "gpt"]),
    (dict(dropout=1.5), ["dropout=1.5", "[0, 1)"]),
    (dict(mlp_activation="tanh"), ["mlp_activation='tanh'", "silu"]),
    (dict(dim=100, num_q_heads=3, head_dim=0), ["dim=100", "num_q_heads=3"]),
])
def test_model_config_errors_name_field_value_and_allowed(kwargs, words):
    import modules
    with pytest.raises(ValueError) as e:  # model_type is checked where a config enters (the registry declares it)
        modules.validate_config(ModelConfig(**kwargs))
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(lr_schedule="step"), ["lr_schedule='step'", "cosine"]),
    (dict(batch_size=-1), ["batch_size=-1"]),
    (dict(name="a/b"), ["name='a/b'"]),
    (dict(warmup_frac=0.5, decay_frac=0.7), ["decay_frac=0.7"]),
    (dict(device="tpu"), ["device='tpu'"]),
])
def test_train_config_errors(kwargs, words):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_derived_fields_follow_arguments():
    m = ModelConfig(dim=256, num_q_heads=4)
    assert m.head_dim == 64 and m.vocab_size == 2048 and m.mlp_hidden_dim == int(256 * 4 * 2 / 3)
    assert ModelConfig(tokenizer="byte").vocab_size == 258
    assert TrainConfig(max_steps=1000, warmup_frac=0.1).warmup_steps == 100


def test_presets_match_the_issue():
    m, t = get_preset("llama_1m")
    assert (m.dim, m.num_layers, m.num_q_heads, m.num_kv_heads, m.head_dim) == (128, 4, 2, 1, 64)
    assert (m.mlp_gated, m.mlp_activation, m.mlp_hidden_dim, m.norm_type, m.pos_encoding) == (True, "silu", 341, "rmsnorm", "rope")
    assert (m.rope_theta, m.tie_embeddings, m.vocab_size, m.max_seq_len) == (10000.0, True, 2048, 512)
    g, _ = get_preset("gpt2_1m")
    assert (g.norm_type, g.pos_encoding, g.mlp_activation, g.mlp_gated, g.num_kv_heads) == ("layernorm", "learned", "gelu", False, 2)
    assert t.name == "my_llama_1m"  # a default name is never a shipped run's folder


def test_json_round_trip(tmp_path):
    m, t = get_preset("gpt2_1m", dim=96, lr=1e-3, name="x")
    for cfg, cls in ((m, ModelConfig), (t, TrainConfig)):
        path = tmp_path / f"{cls.__name__}.json"
        config.save_json(cfg, path)
        assert config.load_json(cls, path) == cfg


def test_unknown_json_key_is_a_clear_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**config.to_dict(ModelConfig()), "num_heads": 4}))
    with pytest.raises(ValueError, match="unknown ModelConfig key.*num_heads"):
        config.load_json(ModelConfig, path)
    with pytest.raises(ValueError, match="unknown config field.*colour"):
        get_preset("llama_1m", colour="red")


def test_cli_overrides_every_field():
    parser = argparse.ArgumentParser()
    config.add_config_arguments(parser)
    help_text = parser.format_help()
    for cls in (ModelConfig, TrainConfig):
        for f in config._fields(cls):
            assert f"--{f.name}" in help_text
    args = parser.parse_args(["--dim", "192", "--num_layers", "6", "--mlp_gated", "false", "--lr", "0.01"])
    m, t = get_preset("llama_1m", **config.overrides_from_args(args))
    assert (m.dim, m.num_layers, m.mlp_gated, t.lr) == (192, 6, False, 0.01)
