"""Issue 22's levers: the Muon/AdamW split (a rule that holds for every architecture) and the
speedrun tweaks as config flags (QK-norm, ReLU^2, zero-initialised projections, logit soft-capping)."""
import math

import pytest
import torch
import torch.nn.functional as F

import config
import presets
import runs
import train
from conftest import assert_cache_matches_full, assert_causal, needs_muon, tiny_configs, validated
from modules import build_model, registered_types
from modules.attention import Attention

CPU = torch.device("cpu")


@needs_muon
@pytest.mark.parametrize("model_type", registered_types())
def test_muon_takes_the_block_matrices_and_adamw_everything_else(model_type):
    model = build_model(presets.demo_config(model_type))
    opt = train.make_optimizer(model, config.TrainConfig(optimizer="muon"), CPU)
    muon = {id(p) for g in opt.optimizers["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.optimizers["adamw"].param_groups for p in g["params"]}
    assert not muon & adamw and muon | adamw == {id(p) for p in model.parameters()}  # each in exactly one
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)
              and m.out_features != model.cfg.vocab_size and min(m.weight.shape) > 1}
    assert muon == linear and muon
    for name, p in model.named_parameters():
        if p.dim() != 2 or "embed" in name:  # vectors, Memory Mosaics' 3-D slots, embeddings and the tied head
            assert id(p) in adamw, name
    # one lr serves both: the trainer's schedule reaches every group
    assert {g["lr"] for g in opt.param_groups} == {config.TrainConfig().lr}
    assert "muon" in opt.describe() and "adamw" in opt.describe()


def test_untied_head_stays_with_adamw():
    model = build_model(tiny_configs(tie_embeddings=False)[0])
    assert model.head.weight not in train.muon_matrices(model)


@needs_muon
def test_a_checkpoint_of_another_optimizer_is_refused(tmp_path):
    cfg, tcfg = tiny_configs(max_steps=2, out_dir=str(tmp_path), optimizer="muon")
    model = build_model(cfg)
    muon = train.make_optimizer(model, tcfg, CPU)
    adamw_state = train.make_optimizer(model, config.TrainConfig(), CPU).state_dict()
    with pytest.raises(ValueError, match="another TrainConfig.optimizer"):
        muon.load_state_dict(adamw_state)


@needs_muon
@pytest.mark.parametrize("model_type", [t for t in registered_types() if t != "encdec"])  # encdec: test_momem
def test_muon_trains_every_architecture_down(tmp_path, model_type):
    cfg = presets.demo_config(model_type)
    _, tcfg = tiny_configs(name=model_type, out_dir=str(tmp_path), optimizer="muon", max_steps=30,
                           eval_interval=30, lr=1e-2)
    run = train.train(cfg, tcfg, progress=False)
    val = float(runs.read_log(run)["val_loss"].iloc[-1])
    assert val < math.log(cfg.vocab_size) - 1.0, (model_type, val)


def test_qk_norm_gives_unit_rms_queries_and_keys():
    cfg = tiny_configs(qk_norm=True, pos_encoding="none")[0]
    attention = Attention(cfg, 0)
    q, k, v = attention.project_qkv(torch.randn(2, 5, cfg.dim) * 7, torch.arange(5))
    for t in (q, k):
        torch.testing.assert_close(t.pow(2).mean(-1), torch.ones(t.shape[:-1]), atol=1e-4, rtol=0)
    assert v.pow(2).mean() > 2  # values are left alone


def test_relu2_is_relu_squared():
    from modules.mlp import MLP
    mlp = MLP(8, 16, "relu2", gated=False)
    x = torch.randn(3, 8)
    torch.testing.assert_close(mlp(x), mlp.down(F.relu(mlp.up(x)) ** 2))


def test_zero_init_projections_make_every_block_the_identity():
    cfg = tiny_configs(zero_init_proj=True)[0]
    model = build_model(cfg)
    outs = [m for m in model.modules() if getattr(m, "is_residual_out", False)]
    assert outs and all(bool((m.weight == 0).all()) for m in outs)
    tokens = torch.randint(0, cfg.vocab_size, (2, 7))
    torch.testing.assert_close(model(tokens)[0], model.output_logits(model.embed_tokens(tokens, torch.arange(7))))
    model(tokens, targets=tokens)[1].backward()  # and they learn: their gradient is not zero
    assert all(float(m.weight.grad.abs().sum()) > 0 for m in outs)


def test_logit_softcap_bounds_the_logits():
    cfg = tiny_configs(logit_softcap=2.0, init_std=1.0)[0]
    capped, plain = build_model(cfg), build_model(tiny_configs(init_std=1.0)[0])
    plain.load_state_dict(capped.state_dict())
    tokens = torch.randint(0, cfg.vocab_size, (2, 9))
    raw, logits = plain(tokens)[0], capped(tokens)[0]
    assert raw.abs().max() > 4 and logits.abs().max() <= 2.0  # large raw logits, squashed
    torch.testing.assert_close(logits, 2.0 * torch.tanh(raw / 2.0))
    with pytest.raises(ValueError, match="logit_softcap=0.5 is invalid"):
        tiny_configs(logit_softcap=0.5)


TWEAKS = dict(qk_norm=True, mlp_activation="relu2", zero_init_proj=True, logit_softcap=15.0)


@pytest.mark.parametrize("model_type", registered_types())
def test_every_architecture_honours_or_refuses_the_tweaks(model_type):
    """Honoured tweaks keep the model causal; a tweak it cannot use is refused, by name."""
    base = presets.demo_config(model_type)
    ignored = set(type(build_model(base)).ignored_fields)
    for name, value in TWEAKS.items():
        fields = {**config.to_dict(base), name: value}
        if name in ignored:
            with pytest.raises(ValueError, match=name):
                validated(config.ModelConfig(**fields))
            continue
        cfg = validated(config.ModelConfig(**fields))
        model = build_model(cfg)
        if model_type != "encdec":  # its decoder needs a source: tests/test_momem.py checks it
            assert_causal(model, cfg.vocab_size, length=14, positions=(0, 5, 12))
            assert_cache_matches_full(model, cfg.vocab_size, length=14)
