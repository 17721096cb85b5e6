"""Named presets: a preset is a set of overrides of config.py's defaults.

    from presets import get_preset
    model_cfg, train_cfg = get_preset("llama_1m", dim=192, max_steps=200)

`get_preset` is where a config enters from a name: it also runs the architecture's own checks
(modules.validate_config) and the dataset's (data.dataset_class), which config.py, a leaf,
cannot. `demo_config` shrinks an architecture's first preset for shape traces and demos.
"""
import data
import modules
from config import ModelConfig, TrainConfig, _choice, split_overrides

# --- named presets ---------------------------------------------------------------------------
PRESETS = {
    # the original template's Llama3_1m_atto shape: RMSNorm, RoPE, SwiGLU (hidden 341), MQA 2:1, tied
    "llama_1m": dict(dim=128, num_layers=4, num_q_heads=2, num_kv_heads=1, head_dim=64, mlp_activation="silu",
                     mlp_gated=True, mlp_hidden_mult=4.0, norm_type="rmsnorm", pos_encoding="rope",
                     rope_theta=10000.0, tie_embeddings=True, tokenizer="bpe2048", max_seq_len=512),
    # GPT-2 style: LayerNorm with bias, learned positions, GELU MLP, full multi-head attention; MLP width 3x
    # (not GPT-2's 4x) so the parameter count matches llama_1m within 1% (989,440 vs 983,680)
    "gpt2_1m": dict(dim=128, num_layers=4, num_q_heads=2, num_kv_heads=2, head_dim=64, mlp_activation="gelu",
                    mlp_gated=False, mlp_hidden_mult=3.0, norm_type="layernorm", norm_bias=True, linear_bias=True,
                    pos_encoding="learned", scale_embedding=False, tie_embeddings=True, tokenizer="bpe2048",
                    max_seq_len=512),
    # Fractal-Head Attention sized like the original shipped model (3 query heads: 1x64, 2x32, 4x16)
    "fha_1m": dict(model_type="fha", dim=64, num_layers=4, num_q_heads=3, num_kv_heads=1, head_dim=64,
                   fractal_split=2, mlp_gated=True, mlp_activation="silu", mlp_hidden_mult=8.0, tokenizer="bpe2048",
                   max_seq_len=512),
    # its fair control: identical except split 1 (three ordinary 64-wide heads)
    "fha_1m_control": dict(model_type="fha", dim=64, num_layers=4, num_q_heads=3, num_kv_heads=1, head_dim=64,
                           fractal_split=1, mlp_gated=True, mlp_activation="silu", mlp_hidden_mult=8.0,
                           tokenizer="bpe2048", max_seq_len=512),
    # Memory Mosaics with llama_1m's width, depth and tokenizer; 384 persistent slots per head make
    # its parameter count match llama_1m (LayerNorm without bias and no positions, as the reference)
    "mm_1m": dict(model_type="mm", dim=128, num_layers=4, num_q_heads=2, head_dim=0,
                  mm_pmem_size=384, norm_type="layernorm", norm_bias=False, norm_eps=1e-5, pos_encoding="none",
                  scale_embedding=False, tie_embeddings=True, tokenizer="bpe2048", max_seq_len=512),
    # a few-thousand-parameter model for tests, notebooks in CI, and reading shape traces
    "tiny": dict(dim=32, num_layers=2, num_q_heads=2, num_kv_heads=1, head_dim=16, max_seq_len=64,
                 tokenizer="bpe512", mlp_hidden_mult=2.0),
}

# FutureFormer on llama_1m's trunk: chunks t+4..t+7 predicted after layer 1, t+2..t+3 after layer 2
PRESETS["ff_1m"] = dict(PRESETS["llama_1m"], model_type="ff", ff_scales=2, ff_mult=2, ff_window="disjoint",
                        ff_target="mean", ff_loss="cos", ff_lambda=0.5)
# its control: the same model and parameters, trained on the next-token loss alone (lambda 0)
PRESETS["ff_1m_control"] = dict(PRESETS["ff_1m"], ff_lambda=0.0)

# GPU-sized baselines for the full TinyStories (hub or a local copy): llama2.c's stories15M shape
# (dim 288, 6 layers, 6 heads, context 256; its SwiGLU width is also 768) on our largest BPE, and a
# ~40M model (about 37.7M non-embedding parameters), with GPU-sensible batches
_GPU_TRAIN = dict(tokenizer="bpe4096", lr=5e-4, batch_size=128, max_steps=20000, eval_interval=500,
                  checkpoint_interval=1000, eval_tokens=524288)
PRESETS["llama_stories15m"] = dict(PRESETS["llama_1m"], **_GPU_TRAIN, dim=288, num_layers=6, num_q_heads=6,
                                   num_kv_heads=6, head_dim=48, max_seq_len=256)
PRESETS["llama_40m"] = dict(PRESETS["llama_1m"], **{**_GPU_TRAIN, "batch_size": 64}, dim=512, num_layers=12,
                            num_q_heads=8, num_kv_heads=8, head_dim=64, max_seq_len=512)

# MoMeM's three trained modules (momem/): character-level, trained on its synthetic people data. Batches
# are padded per batch, so every step has another shape: compile off (torch 2.13's inductor fails on the
# backward of attention with dynamic shapes, and recompiling per shape would cost more than it saves)
_MOMEM_TRAIN = dict(tokenizer="char", dim=128, num_q_heads=4, num_kv_heads=4, head_dim=32, batch_size=64, lr=2e-3,
                    weight_decay=0.01, eval_interval=250, checkpoint_interval=250, compile="off")
PRESETS["momem_ner"] = dict(_MOMEM_TRAIN, num_layers=4, max_seq_len=96, dataset="momem_ner", max_steps=2500)
PRESETS["momem_summary"] = dict(_MOMEM_TRAIN, model_type="encdec", num_layers=2, encoder_layers=2, max_seq_len=160,
                                dataset="momem_summary", batch_size=32, max_steps=2000)
PRESETS["momem_response"] = dict(PRESETS["momem_summary"], dataset="momem_response")


def check(model_cfg, train_cfg=None):
    """The checks a config needs beyond its own fields: the architecture's (its knobs, and no
    field set that it would ignore) and, with a TrainConfig, that its dataset exists."""
    modules.validate_config(model_cfg)
    if train_cfg is not None:
        data.dataset_class(train_cfg.dataset)
    return model_cfg, train_cfg


def get_preset(preset, /, **overrides):
    """(ModelConfig, TrainConfig) for a named preset, with any field overridden by keyword."""
    _choice("preset", preset, PRESETS)
    model_kw, train_kw = split_overrides({**PRESETS[preset], **overrides})
    train_kw.setdefault("name", f"my_{preset}")  # never a shipped run's folder by default
    return check(ModelConfig(**model_kw), TrainConfig(**train_kw))


def demo_config(model_type):
    """A tiny ModelConfig of `model_type` (its first preset, shrunk, with the overrides its model
    class declares in `demo_overrides`) for shape traces and demos."""
    preset = next((name for name, fields in PRESETS.items() if fields.get("model_type", "gpt") == model_type), None)
    if preset is None:
        raise ValueError(f"model_type={model_type!r} has no preset in presets.PRESETS; add one")
    shrink = dict(dim=16, num_layers=2, head_dim=8, max_seq_len=16, tokenizer="bpe512",
                  **modules.MODEL_REGISTRY[model_type].demo_overrides)
    return get_preset(preset, **shrink)[0]
