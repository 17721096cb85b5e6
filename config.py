"""The one file users edit: model and training settings, with one comment per field.

    from presets import get_preset
    model_cfg, train_cfg = get_preset("llama_1m", dim=192, max_steps=200)

Every field has a comment: meaning, allowed values, typical choice. Fields with a fixed set of
values are `Literal`s: checked here, offered as the CLI's choices. Fields computed from others
(head_dim when left at 0, vocab_size, mlp_hidden_dim, warmup_steps, ...) are filled in by
`__post_init__`, so they always follow the values you pass. An invalid value raises a ValueError
naming the field, the value and what is allowed. Standard library only: building a config
imports neither torch nor the model package. What depends on an architecture or a dataset
(model_type itself, FHA's split, FutureFormer's scales, a field the chosen architecture would
ignore) is checked where a config enters: presets.get_preset, loading a run's configs,
modules.build_model. Architectures are declared once, by modules.MODEL_REGISTRY.
"""
import argparse
import dataclasses
import functools
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Literal

ROOT = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_DIR = os.path.join(ROOT, "tokenizers")
MAX_SEQ_LEN, MAX_LAYERS = 2**20, 1024  # upper bounds of ModelConfig.max_seq_len and num_layers
MAX_SEED = 2**63 - 1  # torch's generators take a signed 64-bit seed
EOT_ID, PAD_ID = 0, 1  # <|endoftext|> and <|pad|>: the same ids in every tokenizer built by tokenizers/build.py
IGNORE_INDEX = -100  # a target that takes no loss (PyTorch's default; never the padding id)


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


def _kind(f):
    """'literal', 'bool', 'int', 'float' or 'str': what a field holds."""
    return "literal" if typing.get_origin(f.type) is Literal else f.type.__name__


def _check_types(obj):
    """Every field holds a value of its declared type (an int is accepted where a float is
    declared), every float is finite and every Literal field one of its choices: a clear error
    instead of a TypeError or a NaN deep inside training."""
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        v, kind = getattr(obj, f.name), _kind(f)
        if kind == "literal":
            _choice(f.name, v, typing.get_args(f.type))
        elif kind == "bool":
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
        _check(v > 0, n, v, "must be a positive integer")


def tokenizer_names():
    """Names of the tokenizer files shipped in tokenizers/ (e.g. 'bpe2048', 'byte', 'char')."""
    return sorted(f[:-5] for f in os.listdir(TOKENIZER_DIR) if f.endswith(".json"))


@functools.lru_cache(maxsize=None)  # read once per process: every config built reads it
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
    model_type: str = "gpt"            # the architecture: a name in modules.MODEL_REGISTRY, which declares them (gpt = the Llama/GPT-2 baseline); checked where a config enters
    tokenizer: str = "bpe2048"         # file in tokenizers/: bpe512 | bpe1024 | bpe2048 | bpe4096 | byte | char
    max_seq_len: int = 512             # context length in tokens (training windows and generation limit); typical 256-1024
    # --- width and depth ----------------------------------------------------------------------
    dim: int = 128                     # residual-stream width; typical 64-512
    num_layers: int = 4                # residual blocks; typical 2-12
    num_q_heads: int = 2               # query heads
    num_kv_heads: int = 1              # key/value heads: 1 = multi-query, num_q_heads = multi-head, in between = grouped-query; must divide num_q_heads
    head_dim: int = 0                  # width of one head; 0 = dim // num_q_heads. RoPE needs it even
    # --- MLP ----------------------------------------------------------------------------------
    mlp_activation: Literal["relu", "gelu", "silu", "relu2"] = "silu"  # relu | gelu | silu | relu2 (ReLU squared: Primer, So et al. 2021; modded-nanogpt)
    mlp_gated: bool = True             # True = GLU variant (SwiGLU with silu), as in Llama; False = GPT-2 style
    mlp_hidden_mult: float = 4.0       # hidden width = dim * mult, times 2/3 when gated so the parameter count stays the same
    # --- positions ----------------------------------------------------------------------------
    pos_encoding: Literal["rope", "learned", "sinusoidal", "none"] = "rope"  # rope (Llama) | learned (GPT-2) | sinusoidal (Vaswani) | none
    rope_theta: float = 10000.0        # RoPE / sinusoidal base
    # --- norms and residual stream ------------------------------------------------------------
    norm_type: Literal["rmsnorm", "layernorm", "cosinenorm"] = "rmsnorm"  # rmsnorm | layernorm | cosinenorm (unit L2 norm times sqrt(dim))
    norm_affine: bool = True           # learned per-channel scale after each norm
    norm_bias: bool = False            # learned per-channel shift after each norm (GPT-2 LayerNorm has one)
    norm_eps: float = 1e-6             # epsilon inside the norm
    post_branch_norm: bool = False     # extra norm on each branch output before the residual add (Grok / Gemma-2 "sandwich")
    linear_bias: bool = False          # bias on attention and MLP projections (GPT-2: True, Llama: False)
    scale_embedding: bool = True       # multiply token embeddings by sqrt(dim) (Gemma style)
    tie_embeddings: bool = True        # output head shares the token-embedding matrix
    dropout: float = 0.0               # dropout on each residual branch's output while training; in [0, 1), typical 0-0.5 (0.1 against overfitting small data)
    attn_dropout: float = 0.0          # dropout on attention probabilities; in [0, 1), typical 0-0.2. Costly on CPU: it disables the fused attention kernel
    init_std: float = 0.02             # std of the normal init of weight matrices (residual outputs scaled by 1/sqrt(2*num_layers))
    # --- tweaks from the speedrun record holders (each off by default; bench/speedrun.py measures them) --
    qk_norm: bool = False              # RMS-normalise each head's queries and keys before RoPE (OLMo 2, Gemma 3, modded-nanogpt): no parameters
    zero_init_proj: bool = False       # residual-branch output projections start at zero, so every block starts as the identity (modded-nanogpt)
    logit_softcap: float = 0.0         # logits -> cap * tanh(logits / cap) (Gemma 2, modded-nanogpt: 15-30); 0 = off
    # --- Fractal-Head Attention (model_type='fha'; see modules/fractal_head_attention.py) ---------
    fractal_split: int = 2             # s: query head i is split into s**i sub-heads of size head_dim / s**i; 1 = ordinary attention
    fractal_scale: Literal["full", "per_head"] = "full"  # full: logits / sqrt(head_dim) for every sub-head (original) | per_head: / sqrt(sub-head size)
    fractal_rope: Literal["subband", "per_head"] = "subband"  # subband: rotate q, k once at head_dim, then slice: sub-head r gets band r of the frequencies (original) | per_head: fresh RoPE at the sub-head size
    # --- Memory Mosaics (model_type='mm'; see modules/memory_mosaics.py) ---------------------------
    mm_pmem_size: int = 0              # persistent-memory slots per head; 0 = parameter parity with a standard GPT block (3.5 * dim)
    mm_key_scale_max: float = 5.0      # clamp of the key-scale exponent (the paper's library: 5; keeps logits <= e^10)
    # --- FutureFormer (model_type='ff'; see modules/future_former.py) ---------------------------
    ff_scales: int = 2                 # p: future chunks predicted besides the next token (scale c covers ff_mult**c tokens); 1 .. num_layers-1
    ff_mult: int = 2                   # m: chunk growth; m=2 -> chunks t+2..t+3, t+4..t+7, t+8..t+15; 1 = single tokens t+2, t+3, ...
    ff_window: Literal["disjoint", "nested"] = "disjoint"  # disjoint (chunks follow each other, the author's intent) | nested (every chunk starts at t+2, the original code)
    ff_target: Literal["sum", "mean", "max", "linear", "norm", "bag"] = "mean"  # what a chunk is summarised as: sum | mean | max | linear (learned map of the mean) | norm (mean of unit embeddings) of its tokens' (detached) embeddings, or bag (its set of tokens)
    ff_loss: Literal["cos", "mse", "mae", "bag_ce", "bce"] = "cos"  # cos | mse | mae against a pooled embedding; bag_ce (softmax CE over the chunk's tokens) | bce (multi-hot, the original) against ff_target='bag'
    ff_lambda: float = 0.5             # weight lambda**c of scale c's loss (nearest c=1); 0 = plain next-token training (the control)
    # --- encoder-decoder (model_type='encdec'; see modules/encoder_decoder.py) -------------------
    encoder_layers: int = 2            # bidirectional layers over the source text (num_layers counts the decoder's)
    encdec_copy: bool = True           # pointer-generator head: the output may copy source tokens (See et al. 2017)
    # --- Mamba-2 (model_type='mamba2'; see modules/mamba2.py) -----------------------------------
    mamba_state_dim: int = 64          # N: state size per head (d_state); the memory is head_dim x N per head. Paper: 64-128; larger recalls more
    mamba_expand: int = 2              # inner width = expand * dim (the paper's 2)
    mamba_head_dim: int = 64           # P: channels per head (headdim, 64 or 128 in the paper); must divide expand * dim
    mamba_groups: int = 1              # G: groups of B and C shared across heads (as grouped-query attention); must divide the heads
    mamba_conv_width: int = 4          # K: kernel of the causal depthwise convolution before the scan (the paper's 4)
    mamba_chunk_size: int = 64         # Q: training scan chunk (cost ~ T x Q inside chunks); changes speed, not results
    # --- derived (filled in by __post_init__, not set by hand) ---------------------------------
    vocab_size: int = field(init=False, default=0)      # from the tokenizer file
    mlp_hidden_dim: int = field(init=False, default=0)  # from dim, mlp_hidden_mult, mlp_gated

    def __post_init__(self):
        _check_types(self)
        _choice("tokenizer", self.tokenizer, tokenizer_names())
        _positive(self, "max_seq_len", "dim", "num_layers", "num_q_heads", "num_kv_heads")
        # far past any sandbox model, and short of sizes that take minutes just to construct
        _check(self.max_seq_len <= MAX_SEQ_LEN, "max_seq_len", self.max_seq_len, f"must be <= {MAX_SEQ_LEN}")
        _check(self.num_layers <= MAX_LAYERS, "num_layers", self.num_layers, f"must be <= {MAX_LAYERS}")
        _check(self.head_dim >= 0, "head_dim", self.head_dim, "must be 0 (= dim // num_q_heads) or a positive integer")
        _check(self.num_q_heads % self.num_kv_heads == 0, "num_q_heads", self.num_q_heads,
               f"must be divisible by num_kv_heads={self.num_kv_heads}")
        if self.head_dim == 0:
            _check(self.dim % self.num_q_heads == 0, "dim", self.dim,
                   f"must be divisible by num_q_heads={self.num_q_heads} when head_dim=0")
            self.head_dim = self.dim // self.num_q_heads
        _check(self.mlp_hidden_mult > 0, "mlp_hidden_mult", self.mlp_hidden_mult, "must be > 0")
        if self.pos_encoding == "rope":
            _check(self.head_dim % 2 == 0, "head_dim", self.head_dim, "must be even for pos_encoding='rope'")
        if self.pos_encoding == "sinusoidal":
            _check(self.dim % 2 == 0, "dim", self.dim, "must be even for pos_encoding='sinusoidal'")
        _check(self.rope_theta > 0, "rope_theta", self.rope_theta, "must be > 0")
        _check(self.norm_eps > 0, "norm_eps", self.norm_eps, "must be > 0")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _check(0 <= self.attn_dropout < 1, "attn_dropout", self.attn_dropout, "must be in [0, 1)")
        _check(self.init_std > 0, "init_std", self.init_std, "must be > 0")
        _check(self.logit_softcap == 0 or self.logit_softcap >= 1, "logit_softcap", self.logit_softcap,
               "must be 0 (off) or >= 1 (logits are capped to +-cap; 15-30 is typical)")
        self.vocab_size = tokenizer_vocab_size(self.tokenizer)
        hidden = self.dim * self.mlp_hidden_mult * (2 / 3 if self.mlp_gated else 1)
        self.mlp_hidden_dim = max(1, int(hidden))


@dataclass
class TrainConfig:
    # --- run ----------------------------------------------------------------------------------
    name: str = "my_model"             # output folder trained/<name>/ (letters, digits, - _ . only)
    out_dir: str = "trained"           # parent folder of runs (relative paths are relative to this project)
    seed: int = 1337                   # seeds init, batch order and dropout; same seed + config = same run; 0 .. 2**63-1
    # --- data ---------------------------------------------------------------------------------
    dataset: str = "tinystories"       # what batches the trainer gets: a key of data.DATASETS; tinystories = packed next-token windows
    data_dir: str = ""                 # local folder with train.txt / valid.txt (TinyStories txt layout); "" = env MMS_DATA_DIR, else the HF hub
    batch_size: int = 16               # sequences per micro-batch, in all: under torchrun each of N processes takes batch_size / N
    grad_accum_steps: int = 1          # micro-batches per optimizer step (effective batch = batch_size * grad_accum_steps)
    max_steps: int = 600               # optimizer steps; tokens seen = max_steps * batch_size * grad_accum_steps * max_seq_len
    # --- capability probes (dataset = mqar | mqar_control | copying | icll; see tasks.py) ------------
    task_vocab: int = 0                # ids a task draws from (2 .. task_vocab - 1); 0 = the tokenizer's vocabulary. Zoology: 8192; 256 trains in minutes
    task_pairs: int = 8                # mqar: key-value pairs (Zoology: 4 at length 64, 8 at 128, 16 at 256); copying: ids to copy
    task_states: int = 6               # icll: states of each random automaton (RegBench: 4-12)
    task_symbols: int = 8              # icll: symbols of each automaton's alphabet (RegBench: 4-18)
    # --- optimizer ----------------------------------------------------------------------------
    lr: float = 3e-3                   # peak learning rate; typical 1e-3 - 1e-2 for ~1M-parameter models
    min_lr_ratio: float = 0.1          # final lr = lr * min_lr_ratio (cosine, linear, wsd)
    lr_schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"  # cosine | linear | constant | wsd (warmup-stable-decay)
    warmup_frac: float = 0.05          # fraction of max_steps spent in linear warmup from 0
    decay_frac: float = 0.2            # wsd only: fraction of max_steps in the final linear decay
    weight_decay: float = 0.1          # AdamW decay, applied to weight matrices only
    beta1: float = 0.9                 # AdamW beta1
    beta2: float = 0.95                # AdamW beta2
    optimizer: Literal["adamw", "muon"] = "adamw"  # adamw | muon: torch.optim.Muon (Jordan et al. 2024) for the 2-D weight matrices inside the blocks, AdamW for the rest (embeddings, the output head, norms, biases, Memory Mosaics' slots). One lr serves both: Muon's update is scaled to AdamW's RMS (adjust_lr_fn="match_rms_adamw", Moonshot AI 2025), so AdamW's lr and weight_decay carry over
    muon_momentum: float = 0.95        # Muon's Nesterov momentum (its authors' default)
    grad_clip: float = 1.0             # clip the global gradient norm to this; 0 = off
    # --- evaluation and checkpoints -----------------------------------------------------------
    eval_interval: int = 50            # evaluate (and write a log_data.csv row) every N steps and at the end
    eval_tokens: int = 131072          # validation tokens per evaluation: fixed windows chosen once per run (131072 = nearly all of the local split; a standard error under 0.01 needs ~1000 windows, e.g. 524288 on the hub)
    checkpoint_interval: int = 100     # write the resumable checkpoint every N steps (and at the end)
    tracker: Literal["none", "tensorboard", "wandb"] = "none"  # live dashboard beside log_data.csv: none | tensorboard (trained/NAME/tensorboard; `tensorboard --logdir trained`) | wandb (offline unless WANDB_MODE; pip install wandb)
    # --- speed --------------------------------------------------------------------------------
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"  # auto (cuda, then mps, then cpu) | cuda | mps | cpu
    autocast: Literal["auto", "on", "off"] = "auto"  # bf16 autocast: auto (on where supported) | on | off
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile: auto (on for cuda and cpu) | on | off
    # --- derived (filled in by __post_init__) ---------------------------------------------------
    warmup_steps: int = field(init=False, default=0)
    decay_steps: int = field(init=False, default=0)

    def __post_init__(self):
        _check_types(self)
        check_folder_name("name", self.name)
        _positive(self, "batch_size", "grad_accum_steps", "max_steps", "eval_interval", "eval_tokens",
                  "checkpoint_interval")
        _check(0 <= self.seed <= MAX_SEED, "seed", self.seed, f"must be an integer in [0, 2**63 - 1 = {MAX_SEED}]")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        _check(0 <= self.warmup_frac < 1, "warmup_frac", self.warmup_frac, "must be in [0, 1)")
        _check(0 <= self.decay_frac <= 1 - self.warmup_frac, "decay_frac", self.decay_frac,
               f"must be in [0, 1 - warmup_frac={self.warmup_frac}]")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "beta2", self.beta2, "must be in [0, 1)")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0 (0 = off)")
        _check(0 <= self.muon_momentum < 1, "muon_momentum", self.muon_momentum, "must be in [0, 1)")
        _check(self.task_vocab == 0 or self.task_vocab >= 8, "task_vocab", self.task_vocab,
               "must be 0 (the tokenizer's vocabulary) or at least 8")
        _positive(self, "task_pairs", "task_states", "task_symbols")
        self.warmup_steps = int(self.warmup_frac * self.max_steps)
        self.decay_steps = int(self.decay_frac * self.max_steps)


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
def _parse_switch(text):
    """An auto/on/off field also takes the words a bool field takes (yes, true, 1, no, false, 0)."""
    try:
        return "on" if _parse_bool(text) else "off"
    except argparse.ArgumentTypeError:
        return text  # argparse then checks it against the field's choices


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
            kind = _kind(f)
            options = dict(choices=typing.get_args(f.type)) if kind == "literal" else dict(metavar=kind.upper())
            parse = {"bool": _parse_bool, "int": int, "float": float}.get(kind, str)
            if {"on", "off"} <= set(options.get("choices", ())):
                parse = _parse_switch
            group.add_argument(f"--{f.name}", type=parse,
                               default=None, help=f"{comments.get(f.name, '')} (default {f.default!r})".replace("%", "%%"),
                               **options)


def overrides_from_args(args, classes=None):
    """The fields of the config classes (default: both) the user set on the command line."""
    names = {f.name for cls in classes or (ModelConfig, TrainConfig) for f in _fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def describe(cfg):
    """Readable multi-line summary of a config."""
    return "\n".join(f"  {k:<20} {v!r}" for k, v in dataclasses.asdict(cfg).items())
