"""Named presets: a preset is a set of overrides of config.py's defaults.

    from presets import get_preset
    model_cfg, train_cfg = get_preset("llama_1m", dim=192, max_steps=200)

`get_preset` is where a config enters from a name: it also runs the architecture's own checks
(modules.validate_config) and the dataset's (data.dataset_class), which config.py, a leaf,
cannot. `demo_config` shrinks an architecture's first preset for shape traces and demos.
"""
import functools
import math

import numpy

import data
import modules
import tasks
from config import ModelConfig, TrainConfig, _choice, split_overrides
from modules.model import RECIPE_1M

# --- named presets: a preset is a recipe (model and training), so `python train.py --preset NAME`
# reproduces the shipped run NAME; every architecture's file declares its own -------------------
# the original template's Llama3_1m_atto shape: RMSNorm, RoPE, SwiGLU (hidden 341), MQA 2:1, tied
_LLAMA = dict(dim=128, num_layers=4, num_q_heads=2, num_kv_heads=1, head_dim=64, mlp_activation="silu", mlp_gated=True,
              mlp_hidden_mult=4.0, norm_type="rmsnorm", pos_encoding="rope", rope_theta=10000.0, tie_embeddings=True,
              tokenizer="bpe2048", max_seq_len=512)
PRESETS = {
    "llama_1m": dict(_LLAMA, **RECIPE_1M),
    # GPT-2 style: LayerNorm with bias, learned positions, GELU MLP, full multi-head attention; MLP width 3x
    # (not GPT-2's 4x) so the parameter count matches llama_1m within 1% (989,440 vs 983,680)
    "gpt2_1m": dict(dim=128, num_layers=4, num_q_heads=2, num_kv_heads=2, head_dim=64, mlp_activation="gelu",
                    mlp_gated=False, mlp_hidden_mult=3.0, norm_type="layernorm", norm_bias=True, linear_bias=True,
                    pos_encoding="learned", scale_embedding=False, tie_embeddings=True, tokenizer="bpe2048",
                    max_seq_len=512, **RECIPE_1M),
    # the first hour: llama_1m's design at a quarter of its size and half its context, trained for about
    # two minutes on a laptop CPU (2.5M tokens) into stories one can read
    "quick": dict(_LLAMA, dim=96, head_dim=48, max_seq_len=256, batch_size=16, max_steps=600, lr=1e-2,
                  eval_interval=100, checkpoint_interval=200, eval_tokens=32768),
    # a few-thousand-parameter model for tests, notebooks in CI, and reading shape traces
    "tiny": dict(dim=32, num_layers=2, num_q_heads=2, num_kv_heads=1, head_dim=16, max_seq_len=64,
                 tokenizer="bpe512", mlp_hidden_mult=2.0),
}

# GPU-sized baselines for the full TinyStories (hub or a local copy): llama2.c's stories15M shape
# (dim 288, 6 layers, 6 heads, context 256; its SwiGLU width is also 768) on our largest BPE, and a
# ~40M model (about 37.7M non-embedding parameters), with GPU-sensible batches
_GPU_TRAIN = dict(tokenizer="bpe4096", lr=5e-4, batch_size=128, max_steps=20000, eval_interval=500,
                  checkpoint_interval=1000, eval_tokens=524288)
PRESETS["llama_stories15m"] = dict(_LLAMA, **_GPU_TRAIN, dim=288, num_layers=6, num_q_heads=6,
                                   num_kv_heads=6, head_dim=48, max_seq_len=256)
PRESETS["llama_40m"] = dict(_LLAMA, **{**_GPU_TRAIN, "batch_size": 64}, dim=512, num_layers=12,
                            num_q_heads=8, num_kv_heads=8, head_dim=64, max_seq_len=512)


# every architecture declares its own presets and parameter-matched controls in its file
CONTROLS = {}  # a control takes its idea's sizes
for _cls in modules.MODEL_REGISTRY.values():
    PRESETS.update(_cls.presets)
    CONTROLS.update(_cls.controls)
BUILT_IN = tuple(PRESETS)  # the core's and the architectures' own (an application adds more when imported)


def register_presets(presets):
    """Add an application's presets ({name: fields}) when its package is imported."""
    taken = sorted(set(presets) & set(PRESETS))
    if taken and any(PRESETS[n] != presets[n] for n in taken):
        raise ValueError(f"preset name(s) {taken} are taken")
    PRESETS.update(presets)


def check(model_cfg, train_cfg=None):
    """The checks a config needs beyond its own fields: the architecture's (its knobs, and no
    field set that it would ignore) and, with a TrainConfig, that its dataset exists."""
    modules.validate_config(model_cfg)
    if train_cfg is not None:
        used = getattr(data.dataset_class(train_cfg.dataset), "uses_fields", ())
        for name in tasks.SyntheticTask.uses_fields:  # TrainConfig fields only the probes' datasets read
            default = TrainConfig.__dataclass_fields__[name].default
            if name not in used and getattr(train_cfg, name) != default:
                raise ValueError(f"{name}={getattr(train_cfg, name)!r} is invalid for dataset={train_cfg.dataset!r}: it is "
                                 f"a knob of the capability probes (tasks.py), so it would change nothing; leave it at "
                                 f"its default {default!r}")
    return model_cfg, train_cfg


def get_preset(preset, /, size=None, recipe=True, **overrides):
    """(ModelConfig, TrainConfig) for a named preset, with any field overridden by keyword; with
    size ('4M', 250000), the preset's width and depth scaled to about that many non-embedding
    parameters first (see `sized`). recipe=False leaves out the shipped runs' training recipe
    (RECIPE_1M's fields), for studies that set their own schedule."""
    _choice("preset", preset, PRESETS)
    fields = {k: v for k, v in PRESETS[preset].items() if recipe or k not in RECIPE_1M}
    model_kw, train_kw = split_overrides({**fields, **(sized(preset, size) if size else {}), **overrides})
    train_kw.setdefault("name", f"my_{preset}")  # never a shipped run's folder by default
    return check(ModelConfig(**model_kw), TrainConfig(**train_kw))


def demo_config(model_type):
    """A tiny ModelConfig of `model_type` (its first built-in preset, or config.py's defaults,
    shrunk, with the overrides its model class declares in `demo_overrides`) for shape traces
    and demos."""
    _choice("model_type", model_type, modules.MODEL_REGISTRY)
    base = next((PRESETS[n] for n in BUILT_IN if PRESETS[n].get("model_type", "gpt") == model_type),
                {"model_type": model_type})
    base = {k: v for k, v in base.items() if k not in RECIPE_1M}
    shrink = dict(dim=16, num_layers=2, head_dim=8, max_seq_len=16, tokenizer="bpe512",
                  **modules.MODEL_REGISTRY[model_type].demo_overrides)
    return check(ModelConfig(**split_overrides({**base, **shrink})[0]))[0]


# --- sizes: a preset at another size -------------------------------------------------------------
def non_embedding_params(model_cfg):
    """Parameters outside the token and position embeddings, counted on the meta device."""
    return modules.sizing.unbuilt_non_embedding(modules.MODEL_REGISTRY[model_cfg.model_type], model_cfg)


def parse_size(size):
    """'4M', '250k', '1.5e6' or a number -> a parameter count."""
    text = str(size).strip().lower()
    scale = {"k": 1e3, "m": 1e6, "b": 1e9}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        value = float("nan")
    if not 1e3 <= value <= 1e10:
        raise ValueError(f"size={size!r} is invalid: give non-embedding parameters between 1k and 10B, e.g. '4M' or 250000")
    return int(value)


def width_overrides(fields, base, dim):
    """The fields that keep every ratio a preset (its `fields`, built as `base`) fixes to the width
    at width `dim`: head_dim (even, for RoPE) and its architecture's `width_fields`."""
    kw = {}
    if fields.get("head_dim"):
        kw["head_dim"] = max(2, round(base.head_dim * dim / base.dim / 2) * 2)
    for name in modules.MODEL_REGISTRY[base.model_type].width_fields:
        if fields.get(name):
            kw[name] = max(1, round(getattr(base, name) * dim / base.dim))
    return kw


def sized(preset, size):
    """Overrides that take `preset` to about `size` non-embedding parameters: depth grows with
    the cube root of the ratio, width is then searched; every ratio to the width the preset fixes
    (head_dim, and the architecture's `width_fields`) is kept, and so are its heads, its MLP shape and
    every other knob. A control (CONTROLS) takes its idea's width and depth, so the pair stays
    parameter-matched at every size."""
    target = parse_size(size)
    source = CONTROLS.get(preset, preset)
    base_kw = split_overrides(PRESETS[source])[0]
    base = ModelConfig(**base_kw)
    ratio = target / non_embedding_params(base)
    architecture = modules.MODEL_REGISTRY[base.model_type]
    floor = architecture.depth_floor(base)

    def config_at(dim, layers):
        return ModelConfig(**{**base_kw, "dim": dim, "num_layers": layers, **width_overrides(base_kw, base, dim)})

    @functools.lru_cache(maxsize=None)
    def per_layer(dim):
        """(parameters outside the layers, per layer) at this width: counts grow linearly in depth."""
        one, two = (non_embedding_params(config_at(dim, floor + i)) for i in (0, 1))
        return one - floor * (two - one), two - one

    # both parts are quadratic in the width: fitted from three widths, then only the chosen one is built
    widths = [2 * round(base.dim * f / 2) for f in (0.5, 1.0, 2.0)]
    fixed_fit, each_fit = (numpy.polyfit(widths, [per_layer(w)[i] for w in widths], 2) for i in (0, 1))

    def estimate(dim, layers):
        return numpy.polyval(fixed_fit, dim) + layers * numpy.polyval(each_fit, dim)

    ideal = base.num_layers * ratio ** (1 / 3)
    candidates = []
    for layers in sorted({max(floor, round(ideal * f)) for f in (0.5, 0.7, 1.0, 1.4, 2.0)}):
        roots = numpy.roots(fixed_fit + layers * each_fit - [0, 0, target])
        width = max((r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0), default=None)
        if width is None:
            continue
        for dim in range(max(2, 2 * round(width / 2) - 16), 2 * round(width / 2) + 18, 2):
            error = abs(estimate(dim, layers) / target - 1)
            if error <= 0.1:
                candidates.append((error > 0.03, abs(math.log(layers / ideal)), error, dim, layers))
    best = None
    for *_, dim, layers in sorted(candidates):  # close enough (3%) first, then the depth the rule wants
        cfg = config_at(dim, layers)
        try:
            modules.validate_config(cfg)
        except ValueError:
            continue
        error = abs(non_embedding_params(cfg) / target - 1)
        if error <= 0.1:
            best = (error, cfg)
            break
    if best is None or best[0] > 0.1:
        raise ValueError(f"size={size!r} is invalid for preset {preset!r}: no width and depth within 10% of "
                         f"{target:,} non-embedding parameters keeps its heads and ratios")
    return {k: getattr(best[1], k) for k in ("dim", "num_layers", "head_dim", *architecture.width_fields)
            if k in base_kw or k in ("dim", "num_layers")}
