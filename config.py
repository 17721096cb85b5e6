"""The one file users edit: model and training settings, named presets, JSON save/load, CLI.

    from config import get_preset
    model_cfg, train_cfg = get_preset("llama_1m", dim=192, max_steps=200)

Every field has a comment: meaning, allowed values, typical choice. Fields computed from
others (head_dim when left at 0, vocab_size, mlp_hidden_dim, warmup_steps, ...) are filled in
by `__post_init__`, so they always follow the values you pass. Any invalid value raises a
ValueError naming the field, the value and what is allowed. Standard library only, except
that validation imports the model registry (lazily) for the list of model types and each
architecture's own checks, and data.DATASETS for the list of datasets.
"""
import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_DIR = os.path.join(ROOT, "tokenizers")
MAX_SEQ_LEN, MAX_LAYERS = 2**20, 1024  # upper bounds of ModelConfig.max_seq_len and num_layers


def _check(ok, name, value, allowed):
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {allowed}")


def _choice(name, value, options):
    _check(value in options, name, value, f"must be one of {list(options)}")


def check_folder_name(field, value):
    """A run or study name becomes one folder inside the output folder: it may not hold a path."""
    _check(isinstance(value, str) and 0 < len(value) <= 100 and all(c.isalnum() or c in "-_." for c in value)
           and value not in (".", ".."), field, value,
           "must be 1-100 characters: letters, digits, '-', '_' and '.' (a folder name, not a path)")


def _numbers(obj):
    """Every int/float/bool/str field holds a value of its declared type (an int is accepted
    where a float is declared) and every float is finite: a clear error instead of a
    TypeError or a NaN deep inside training."""
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        v, kind = getattr(obj, f.name), f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "bool":
            _check(isinstance(v, bool), f.name, v, "must be true or false")
        elif kind == "int":
            _check(isinstance(v, int) and not isinstance(v, bool), f.name, v, "must be an integer")
        elif kind == "float":
            _check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), f.name, v,
                   "must be a finite number")
        elif kind == "str":
            _check(isinstance(v, str), f.name, v, "must be a string")


def _positive(obj, *names):
    for n in names:
        v = getattr(obj, n)
        _check(isinstance(v, int) and not isinstance(v, bool) and v > 0, n, v, "must be a positive integer")


def tokenizer_names():
    """Names of the tokenizer files shipped in tokenizers/ (e.g. 'bpe2048', 'byte', 'char')."""
    return sorted(f[:-5] for f in os.listdir(TOKENIZER_DIR) if f.endswith(".json"))


def tokenizer_vocab_size(name):
    """Vocabulary size (special tokens included) of tokenizers/<name>.json, read with json only."""
    path = os.path.join(TOKENIZER_DIR, f"{name}.json")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    ids = list(spec["model"]["vocab"].values()) + [t["id"] for t in spec.get("added_tokens", [])]
    return max(ids) + 1


@dataclass
class ModelConfig:
    # --- which architecture -------------------------------------------------------------------
    model_type: str = "gpt"            # registry key in modules/__init__.py: 'gpt' (Llama/GPT baseline); more as architectures land
    tokenizer: str = "bpe2048"         # file in tokenizers/: bpe512 | bpe1024 | bpe2048 | bpe4096 | byte | char
    max_seq_len: int = 512             # context length in tokens (training windows and generation limit); typical 256-1024
    # --- width and depth ----------------------------------------------------------------------
    dim: int = 128                     # residual-stream width; typical 64-512
    num_layers: int = 4                # residual blocks; typical 2-12
    num_q_heads: int = 2               # query heads
    num_kv_heads: int = 1              # key/value heads: 1 = multi-query, num_q_heads = multi-head, in between = grouped-query; must divide num_q_heads
    head_dim: int = 0                  # width of one head; 0 = dim // num_q_heads. RoPE needs it even
    # --- MLP ----------------------------------------------------------------------------------
    mlp_activation: str = "silu"       # relu | gelu | silu
    mlp_gated: bool = True             # True = GLU variant (SwiGLU with silu), as in Llama; False = GPT-2 style
    mlp_hidden_mult: float = 4.0       # hidden width = dim * mult, times 2/3 when gated so the parameter count stays the same
    # --- positions ----------------------------------------------------------------------------
    pos_encoding: str = "rope"         # rope (Llama) | learned (GPT-2) | sinusoidal (Vaswani) | none
    rope_theta: float = 10000.0        # RoPE / sinusoidal base
    # --- norms and residual stream ------------------------------------------------------------
    norm_type: str = "rmsnorm"         # rmsnorm | layernorm | cosinenorm (unit L2 norm times sqrt(dim))
    norm_affine: bool = True           # learned per-channel scale after each norm
    norm_bias: bool = False            # learned per-channel shift after each norm (GPT-2 LayerNorm has one)
    norm_eps: float = 1e-6             # epsilon inside the norm
    post_branch_norm: bool = False     # extra norm on each branch output before the residual add (Grok / Gemma-2 "sandwich")
    linear_bias: bool = False          # bias on attention and MLP projections (GPT-2: True, Llama: False)
    scale_embedding: bool = True       # multiply token embeddings by sqrt(dim) (Gemma style)
    tie_embeddings: bool = True        # output head shares the token-embedding matrix
    dropout: float = 0.0               # dropout on each residual branch's output while training; 0-0.5 (0.1 against overfitting small data)
    attn_dropout: float = 0.0          # dropout on attention probabilities; 0-0.5. Costly on CPU: it disables the fused attention kernel
    init_std: float = 0.02             # std of the normal init of weight matrices (residual outputs scaled by 1/sqrt(2*num_layers))
    # --- Fractal-Head Attention (model_type='fha'; see modules/fractal_head_attention.py) ---------
    fractal_split: int = 2             # s: query head i is split into s**i sub-heads of size head_dim / s**i; 1 = ordinary attention
    fractal_scale: str = "full"        # full: logits / sqrt(head_dim) for every sub-head (original) | per_head: / sqrt(sub-head size)
    fractal_rope: str = "subband"      # subband: rotate q, k once at head_dim, then slice: sub-head r gets band r of the frequencies (original) | per_head: fresh RoPE at the sub-head size
    # --- Memory Mosaics (model_type='mm'; see modules/memory_mosaics.py) ---------------------------
    mm_pmem_size: int = 0              # persistent-memory slots per head; 0 = parameter parity with a standard GPT block (3.5 * dim)
    mm_key_scale_max: float = 5.0      # clamp of the key-scale exponent (the paper's library: 5; keeps logits <= e^10)
    # --- FutureFormer (model_type='ff'; see modules/future_former.py) ---------------------------
    ff_scales: int = 2                 # p: future chunks predicted besides the next token (scale c covers ff_mult**c tokens); 1 .. num_layers-1
    ff_mult: int = 2                   # m: chunk growth; m=2 -> chunks t+2..t+3, t+4..t+7, t+8..t+15; 1 = single tokens t+2, t+3, ...
    ff_window: str = "disjoint"        # disjoint (chunks follow each other, the author's intent) | nested (every chunk starts at t+2, the original code)
    ff_target: str = "mean"            # what a chunk is summarised as: sum | mean | max | linear (learned map of the mean) | norm (mean of unit embeddings) of its tokens' (detached) embeddings, or bag (its set of tokens)
    ff_loss: str = "cos"               # cos | mse | mae against a pooled embedding; bag_ce (softmax CE over the chunk's tokens) | bce (multi-hot, the original) against ff_target='bag'
    ff_lambda: float = 0.5             # weight lambda**c of scale c's loss (nearest c=1); 0 = plain next-token training (the control)
    # --- encoder-decoder (model_type='encdec'; see modules/encoder_decoder.py) -------------------
    encoder_layers: int = 2            # bidirectional layers over the source text (num_layers counts the decoder's)
    encdec_copy: bool = True           # pointer-generator head: the output may copy source tokens (See et al. 2017)
    # --- derived (filled in by __post_init__, not set by hand) ---------------------------------
    vocab_size: int = field(init=False, default=0)      # from the tokenizer file
    mlp_hidden_dim: int = field(init=False, default=0)  # from dim, mlp_hidden_mult, mlp_gated

    def __post_init__(self):
        import modules  # lazily: the registry is the single list of model types and their own checks
        _numbers(self)
        _choice("model_type", self.model_type, modules.registered_types())
        _choice("tokenizer", self.tokenizer, tokenizer_names())
        _positive(self, "max_seq_len", "dim", "num_layers", "num_q_heads", "num_kv_heads")
        # far past any sandbox model, and short of sizes that take minutes just to construct
        _check(self.max_seq_len <= MAX_SEQ_LEN, "max_seq_len", self.max_seq_len, f"must be <= {MAX_SEQ_LEN}")
        _check(self.num_layers <= MAX_LAYERS, "num_layers", self.num_layers, f"must be <= {MAX_LAYERS}")
        _check(isinstance(self.head_dim, int) and self.head_dim >= 0, "head_dim", self.head_dim,
               "must be 0 (= dim // num_q_heads) or a positive integer")
        _check(self.num_q_heads % self.num_kv_heads == 0, "num_q_heads", self.num_q_heads,
               f"must be divisible by num_kv_heads={self.num_kv_heads}")
        if self.head_dim == 0:
            _check(self.dim % self.num_q_heads == 0, "dim", self.dim,
                   f"must be divisible by num_q_heads={self.num_q_heads} when head_dim=0")
            self.head_dim = self.dim // self.num_q_heads
        _choice("mlp_activation", self.mlp_activation, ("relu", "gelu", "silu"))
        _check(self.mlp_hidden_mult > 0, "mlp_hidden_mult", self.mlp_hidden_mult, "must be > 0")
        _choice("pos_encoding", self.pos_encoding, ("rope", "learned", "sinusoidal", "none"))
        if self.pos_encoding == "rope":
            _check(self.head_dim % 2 == 0, "head_dim", self.head_dim, "must be even for pos_encoding='rope'")
        if self.pos_encoding == "sinusoidal":
            _check(self.dim % 2 == 0, "dim", self.dim, "must be even for pos_encoding='sinusoidal'")
        _check(self.rope_theta > 0, "rope_theta", self.rope_theta, "must be > 0")
        _choice("norm_type", self.norm_type, ("rmsnorm", "layernorm", "cosinenorm"))
        _check(self.norm_eps > 0, "norm_eps", self.norm_eps, "must be > 0")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _check(0 <= self.attn_dropout < 1, "attn_dropout", self.attn_dropout, "must be in [0, 1)")
        _check(self.init_std > 0, "init_std", self.init_std, "must be > 0")
        self.vocab_size = tokenizer_vocab_size(self.tokenizer)
        hidden = self.dim * self.mlp_hidden_mult * (2 / 3 if self.mlp_gated else 1)
        self.mlp_hidden_dim = max(1, int(hidden))
        modules.validate_config(self)


@dataclass
class TrainConfig:
    # --- run ----------------------------------------------------------------------------------
    name: str = "my_model"             # output folder trained/<name>/ (letters, digits, - _ . only)
    out_dir: str = "trained"           # parent folder of runs (relative paths are relative to this project)
    seed: int = 1337                   # seeds init, batch order and dropout; same seed + config = same run
    # --- data ---------------------------------------------------------------------------------
    dataset: str = "tinystories"       # what batches the trainer gets: a key of data.DATASETS; tinystories = packed next-token windows
    data_dir: str = ""                 # local folder with train.txt / valid.txt (TinyStories txt layout); "" = env MMS_DATA_DIR, else the HF hub
    batch_size: int = 16               # sequences per micro-batch, in all: under torchrun each of N processes takes batch_size / N
    grad_accum_steps: int = 1          # micro-batches per optimizer step (effective batch = batch_size * grad_accum_steps)
    max_steps: int = 600               # optimizer steps; tokens seen = max_steps * batch_size * grad_accum_steps * max_seq_len
    # --- optimizer ----------------------------------------------------------------------------
    lr: float = 3e-3                   # peak learning rate; typical 1e-3 - 1e-2 for ~1M-parameter models
    min_lr_ratio: float = 0.1          # final lr = lr * min_lr_ratio (cosine, linear, wsd)
    lr_schedule: str = "cosine"        # cosine | linear | constant | wsd (warmup-stable-decay)
    warmup_frac: float = 0.05          # fraction of max_steps spent in linear warmup from 0
    decay_frac: float = 0.2            # wsd only: fraction of max_steps in the final linear decay
    weight_decay: float = 0.1          # AdamW decay, applied to weight matrices only
    beta1: float = 0.9                 # AdamW beta1
    beta2: float = 0.95                # AdamW beta2
    grad_clip: float = 1.0             # clip the global gradient norm to this; 0 = off
    # --- evaluation and checkpoints -----------------------------------------------------------
    eval_interval: int = 50            # evaluate (and write a log_data.csv row) every N steps and at the end
    eval_tokens: int = 131072          # validation tokens per evaluation: fixed windows chosen once per run (131072 = nearly all of the local split; a standard error under 0.01 needs ~1000 windows, e.g. 524288 on the hub)
    checkpoint_interval: int = 100     # write the resumable checkpoint every N steps (and at the end)
    # --- speed --------------------------------------------------------------------------------
    device: str = "auto"               # auto (cuda, then mps, then cpu) | cuda | mps | cpu
    autocast: str = "auto"             # bf16 autocast: auto (on where supported) | on | off
    compile: str = "auto"              # torch.compile: auto (on for cuda and cpu) | on | off
    # --- derived (filled in by __post_init__) ---------------------------------------------------
    warmup_steps: int = field(init=False, default=0)
    decay_steps: int = field(init=False, default=0)

    def __post_init__(self):
        _numbers(self)
        check_folder_name("name", self.name)
        import data  # lazily: data.DATASETS is the single list of datasets
        _choice("dataset", self.dataset, data.DATASETS)
        _positive(self, "batch_size", "grad_accum_steps", "max_steps", "eval_interval", "eval_tokens",
                  "checkpoint_interval")
        _check(isinstance(self.seed, int), "seed", self.seed, "must be an integer")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        _choice("lr_schedule", self.lr_schedule, ("cosine", "linear", "constant", "wsd"))
        _check(0 <= self.warmup_frac < 1, "warmup_frac", self.warmup_frac, "must be in [0, 1)")
        _check(0 <= self.decay_frac <= 1 - self.warmup_frac, "decay_frac", self.decay_frac,
               f"must be in [0, 1 - warmup_frac={self.warmup_frac}]")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "beta2", self.beta2, "must be in [0, 1)")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0 (0 = off)")
        _choice("device", self.device, ("auto", "cuda", "mps", "cpu"))
        _choice("autocast", self.autocast, ("auto", "on", "off"))
        _choice("compile", self.compile, ("auto", "on", "off"))
        self.warmup_steps = int(self.warmup_frac * self.max_steps)
        self.decay_steps = int(self.decay_frac * self.max_steps)


# --- named presets: a preset is a set of overrides of the defaults ---------------------------
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
    "mm_1m": dict(model_type="mm", dim=128, num_layers=4, num_q_heads=2, num_kv_heads=2, head_dim=0,
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

# MoMeM's three trained modules (momem/): character-level, trained on its synthetic people data. Batches
# are padded per batch, so every step has another shape: compile off (torch 2.13's inductor fails on the
# backward of attention with dynamic shapes, and recompiling per shape would cost more than it saves)
_MOMEM_TRAIN = dict(tokenizer="char", dim=128, num_q_heads=4, num_kv_heads=4, head_dim=32, batch_size=64, lr=2e-3,
                    weight_decay=0.01, eval_interval=250, checkpoint_interval=250, compile="off")
PRESETS["momem_ner"] = dict(_MOMEM_TRAIN, num_layers=4, max_seq_len=96, dataset="momem_ner", max_steps=2500)
PRESETS["momem_summary"] = dict(_MOMEM_TRAIN, model_type="encdec", num_layers=2, encoder_layers=2, max_seq_len=160,
                                dataset="momem_summary", batch_size=32, max_steps=2000)
PRESETS["momem_response"] = dict(PRESETS["momem_summary"], dataset="momem_response")


def _fields(cls):
    return [f for f in dataclasses.fields(cls) if f.init]


def split_overrides(overrides):
    """Split {field: value} into (model overrides, train overrides); unknown keys raise ValueError."""
    model_keys = {f.name for f in _fields(ModelConfig)}
    train_keys = {f.name for f in _fields(TrainConfig)}
    unknown = set(overrides) - model_keys - train_keys
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}; see config.py for the allowed fields")
    return ({k: v for k, v in overrides.items() if k in model_keys},
            {k: v for k, v in overrides.items() if k in train_keys})


def get_preset(preset, /, **overrides):
    """(ModelConfig, TrainConfig) for a named preset, with any field overridden by keyword."""
    _choice("preset", preset, PRESETS)
    model_kw, train_kw = split_overrides({**PRESETS[preset], **overrides})
    train_kw.setdefault("name", preset)
    return ModelConfig(**model_kw), TrainConfig(**train_kw)


# --- JSON ----------------------------------------------------------------------------------
def to_dict(cfg):
    """The user-settable fields of a config (derived fields are recomputed on load)."""
    return {f.name: getattr(cfg, f.name) for f in _fields(type(cfg))}


def save_json(cfg, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_dict(cfg), f, indent=2)
        f.write("\n")


def from_dict(cls, data, source="config"):
    """Build cls from a dict, rejecting unknown keys with a clear error (derived keys are ignored)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} is invalid: must hold a JSON object of {cls.__name__} fields, "
                         f"not a {type(data).__name__}")
    derived = {f.name for f in dataclasses.fields(cls) if not f.init}
    known = {f.name for f in _fields(cls)}
    unknown = set(data) - known - derived
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} key(s) {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**{k: v for k, v in data.items() if k in known})


def load_json(cls, path, **overrides):
    """cls from a JSON file, with `overrides` replacing fields; a clear error naming the file
    when it is not JSON (a damaged or foreign file)."""
    try:
        with open(path, encoding="utf-8") as f:
            fields = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from the run, or train again") from None
    return from_dict(cls, {**fields, **overrides} if isinstance(fields, dict) else fields, source=path)


# --- command line --------------------------------------------------------------------------
def _parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _comment_of(cls):
    """Map field name -> the comment written beside it in this file (for --help)."""
    import inspect
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        code, _, comment = line.partition("#")
        name = code.strip().split(":")[0]
        if comment and ":" in code and name.isidentifier():
            comments[name] = comment.strip()
    return comments


def add_config_arguments(parser, classes=None, title=None):
    """Add one --field option per field of the config classes (default: ModelConfig and
    TrainConfig); an option left out keeps the preset's (or saved config's) value."""
    classes = classes or (ModelConfig, TrainConfig)
    for cls in classes:
        group = parser.add_argument_group(title or f"{cls.__name__} fields (override the preset)")
        comments = _comment_of(cls)
        for f in _fields(cls):
            kind = {"bool": _parse_bool, "int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            group.add_argument(f"--{f.name}", type=kind, default=None, metavar=type(f.default).__name__.upper(),
                               help=f"{comments.get(f.name, '')} (default {f.default!r})".replace("%", "%%"))


def overrides_from_args(args, classes=None):
    """The fields of the config classes (default: both) the user set on the command line."""
    names = {f.name for cls in classes or (ModelConfig, TrainConfig) for f in _fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def describe(cfg):
    """Readable multi-line summary of a config."""
    return "\n".join(f"  {k:<20} {v!r}" for k, v in dataclasses.asdict(cfg).items())
