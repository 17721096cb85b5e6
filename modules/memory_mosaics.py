"""Memory Mosaics (Zhang, Nolte, Sadhukhan, Chen, Bottou, arXiv 2405.06394), following the
authors' reference model (nanoMosaics). No positional encoding; each block is
    x = x + ContextMemory(LN(x));  x = x + PersistentMemory(LN(x))
then a final norm and a head tied to the embedding (the GPT baseline's, reused).

Shapes: B batch, T positions, C = dim, nh = num_q_heads heads of size hs = C / nh.

Context memory, per head h (there is no query projection):
  keys     k_t = sigma_h * kbar_t / |kbar_t|,  kbar_t = sum_{s<=t} lambda_h^(t-s) W_k x_s   (leaky average, current step included)
  values   v_t = rho_h * vhat_t / |vhat_t|,    vhat_t = gamma_h W_v x_t + (1 - gamma_h) W_v x_{t+1}  (peeks one step ahead; 0 past the end)
  output   y_t = sum_{s<=t-1} softmax_s(k_t . k_s) v_s   (temperature 1, strictly earlier pairs; y_0 = 0)
A pair (k_s, v_s) exists only once x_{s+1} is known, hence the strict mask; it is computed as
scaled_dot_product_attention(query=k[1:], key=k[:-1], value=v[:-1], is_causal=True, scale=1).
Persistent memory: its own leaky-averaged normalised key (scale sigma'^2) retrieves over P learned
key/value slots per head (no mask), times exp(10 o_h), then an output projection.

Per-head scalars are stored divided by 10 and multiplied by 10 when used (a 10x learning rate
under Adam, as in the reference); being 1-D they take no weight decay. The key-scale exponent is
clamped at mm_key_scale_max (5, as in the paper's library).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.attention import DecodeCache
from modules.layer import ResidualLayer
from modules.logging import LoggingModule, log_io
from modules.model import GPT, RECIPE_1M

SCALAR_MULT = 10.0  # per-head scalars are stored /10 and used x10
EPS = 1e-10


def validate_config(cfg):
    if cfg.pos_encoding != "none":
        raise ValueError(f"pos_encoding={cfg.pos_encoding!r} is invalid for model_type='mm': Memory Mosaics has no "
                         "positional encoding (order comes from the leaky keys and the value look-ahead); use 'none'")
    if cfg.head_dim * cfg.num_q_heads != cfg.dim:
        raise ValueError(f"head_dim={cfg.head_dim} is invalid for model_type='mm': heads split the width, so "
                         f"head_dim * num_q_heads must equal dim={cfg.dim} (leave head_dim=0)")
    if not isinstance(cfg.mm_pmem_size, int) or cfg.mm_pmem_size < 0:
        raise ValueError(f"mm_pmem_size={cfg.mm_pmem_size!r} is invalid: must be 0 (parameter parity) or a positive integer")
    if cfg.mm_key_scale_max <= 0:
        raise ValueError(f"mm_key_scale_max={cfg.mm_key_scale_max} is invalid: must be > 0")


def pmem_size(cfg):
    """Persistent-memory slots per head. 0 in the config = parameter parity: P = 3.5 C, so the
    block's 5 C x C matrices plus 2 P C slot parameters equal the 12 C^2 of a standard GPT block
    (multi-head attention + 4C MLP), as in the paper."""
    return cfg.mm_pmem_size or max(1, round(3.5 * cfg.dim))


def weights_lower_bound(c):
    """Values Memory Mosaics holds at least: per layer 5 dim x dim matrices (two key maps, values,
    two outputs) and 2 x P x dim persistent slots; no MLP and no position table."""
    return c.vocab_size * c.dim + c.num_layers * (5 * c.dim * c.dim + 2 * pmem_size(c) * c.dim)


# --- the training path: every position at once -----------------------------------------------
def leaky_average(x, beta, state=None, chunk=16):
    """Causal leaky average along time, current step included:
        y_t = sum_{s<=t} exp(-beta (t - s)) x_s  (+ exp(-beta (t + 1)) * state)
    x (B, nh, T, hs), beta (nh,) >= 0, state (B, nh, hs) = y of the step before x (for decoding).

    Chunked, without a T x T matrix: a (chunk x chunk) decay matrix inside each chunk, then an
    (n_chunks x n_chunks) one carries each chunk's total into the later chunks. Every exponent is
    <= 0, so nothing overflows whatever beta is."""
    B, nh, T, hs = x.shape
    c = min(chunk, T)
    n = -(-T // c)
    if n * c != T:  # pad the end (the future): earlier outputs are unaffected
        x = F.pad(x, (0, 0, 0, n * c - T))
    beta = beta.to(x.dtype)[:, None, None]
    steps = torch.arange(c, device=x.device, dtype=x.dtype)
    lag = steps[:, None] - steps[None, :]
    intra = torch.exp(-beta * lag.clamp_min(0)) * (lag >= 0)  # (nh, c, c), lower triangle
    x = x.view(B, nh, n, c, hs)
    y = intra[None, :, None] @ x  # (B, nh, n, c, hs)
    if n > 1 or state is not None:
        totals = y[:, :, :, -1]  # each chunk's own sum at its last step
        chunks = torch.arange(n, device=x.device, dtype=x.dtype)
        gap = chunks[:, None] - chunks[None, :] - 1  # chunk j receives chunk i < j's total, decayed
        inter = torch.exp(-beta * c * gap.clamp_min(0)) * (gap >= 0)  # (nh, n, n), strict lower triangle
        carried = inter[None] @ totals  # (B, nh, n, hs): state entering each chunk
        if state is not None:
            carried = carried + torch.exp(-beta * c * chunks[:, None]) * state[:, :, None]
        y = y + torch.exp(-beta * (steps[:, None] + 1))[None, :, None] * carried[:, :, :, None]
    return y.view(B, nh, n * c, hs)[:, :, :T]


def normalize(x, scale):
    """x / |x| along the last dim, times a per-head scale (nh,)."""
    return x / (x.norm(dim=-1, keepdim=True) + EPS) * scale[:, None, None].to(x.dtype)


# --- the decoding path: new tokens over a cache of what came before ------------------------------
def store_state(state, name, value):
    """Keep a decoding state tensor of fixed shape: a copy the first time, then written in place,
    so a compiled decode step mutates its inputs instead of returning new ones (CUDA graphs need
    fixed addresses)."""
    if name in state:
        state[name].copy_(value)
    else:
        state[name] = value.clone()


class MosaicCache(DecodeCache):
    """Decoding state of every block: leaky-average states, the normalised context keys, the
    values of completed pairs, and the pending raw value of the newest position (its pair is
    completed by the next token)."""

    def __init__(self, batch_size, max_len, device, pad=None):
        super().__init__(batch_size, max_len, device, pad)
        self.layers = {}

    def state(self, layer_idx, name):
        return self.layers.setdefault((layer_idx, name), {})

    def memory_mask(self, num_new):
        """(B, num_new, visible pair slots) bool: new token t may read the completed pairs at
        strictly earlier, non-padding positions."""
        slot = self.visible_slots(num_new, shift=-1)
        query = self.new_slots(num_new)
        return (slot[None, :] <= query[:, None] - 1)[None] & (slot[None, None, :] >= self.pad[:, None, None])


# --- the blocks (ContextMemory holds both paths: retrieve for training, decode for decoding) --------
class LeakyKeys(LoggingModule):
    """Key featuriser: W_k, leaky average with a learned decay per head, L2 normalisation and a scale."""

    def __init__(self, cfg, scale_pow=1):
        super().__init__()
        self.nh, self.hs, self.scale_pow, self.scale_max = cfg.num_q_heads, cfg.head_dim, scale_pow, cfg.mm_key_scale_max
        self.W_k = nn.Linear(cfg.dim, cfg.dim, bias=cfg.linear_bias)
        self.leaky_beta = nn.Parameter(torch.linspace(0.5, 5.0, self.nh) / SCALAR_MULT)  # beta_h = 10 |b_h|
        self.key_scale = nn.Parameter(torch.full((self.nh,), 0.1))  # sigma_h = exp(min(10 a_h * pow, max))

    def scale(self):
        return torch.exp((SCALAR_MULT * self.scale_pow * self.key_scale).clamp(max=self.scale_max))

    @log_io
    def forward(self, x, state=None, real=None):
        """x (B, T, C) -> keys (B, nh, T, hs); state: dict holding the decoding leaky state."""
        B, T, _ = x.shape
        raw = self.W_k(x).view(B, T, self.nh, self.hs).transpose(1, 2)
        if real is not None:  # left padding contributes nothing to the average
            raw = raw * real[:, None, :, None]
        beta = SCALAR_MULT * self.leaky_beta.abs()
        kbar = leaky_average(raw, beta, None if state is None else state.get("kbar"))
        if state is not None:
            store_state(state, "kbar", kbar[:, :, -1])
        return normalize(kbar, self.scale())


class ContextMemory(LoggingModule):
    """(B, T, C) -> (B, T, C): nh associative memories over the strictly earlier (key, value) pairs."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.layer_idx, self.nh, self.hs = layer_idx, cfg.num_q_heads, cfg.head_dim
        self.keys = LeakyKeys(cfg)
        self.W_v = nn.Linear(cfg.dim, cfg.dim, bias=cfg.linear_bias)
        self.value_mix = nn.Parameter(torch.rand(self.nh))  # gamma_h: weight of the current step, 1 - gamma_h of the next
        self.value_scale = nn.Parameter(torch.full((self.nh,), -0.05))  # rho_h = exp(10 r_h)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=cfg.linear_bias)
        self.out.is_residual_out = True
        self.dropout = cfg.attn_dropout

    def values(self, raw_now, raw_next):
        """Look-ahead values from raw W_v x_t and W_v x_{t+1}, both (B, nh, T, hs)."""
        gamma = self.value_mix[:, None, None]
        return normalize(gamma * raw_now + (1 - gamma) * raw_next, torch.exp(SCALAR_MULT * self.value_scale))

    @log_io
    def retrieve(self, k, v):
        """Training path: k, v (B, nh, T, hs) -> (B, nh, T, hs); row 0 (empty memory) is zero."""
        y = F.scaled_dot_product_attention(k[:, :, 1:], k[:, :, :-1], v[:, :, :-1], is_causal=True, scale=1.0,
                                           dropout_p=self.dropout if self.training else 0.0)
        return torch.cat([torch.zeros_like(k[:, :, :1]), y], dim=2)

    @log_io
    def forward(self, x, positions, cache=None):
        B, T, C = x.shape
        raw_v = self.W_v(x).view(B, T, self.nh, self.hs).transpose(1, 2)
        if cache is None:
            k = self.keys(x)
            v = self.values(raw_v, F.pad(raw_v[:, :, 1:], (0, 0, 0, 1)))  # W_v x_T := 0
            y = self.retrieve(k, v) if T > 1 else torch.zeros_like(k)
        else:
            y = self.decode(x, raw_v, cache)
        return self.out(y.transpose(1, 2).reshape(B, T, C))

    def decode(self, x, raw_v, cache):
        """Incremental path: write keys now, and each value once the token after it exists."""
        B, T, _ = x.shape
        st = cache.state(self.layer_idx, "context")
        if not st:
            st["keys"] = x.new_zeros(B, self.nh, cache.max_len, self.hs)
            st["values"] = x.new_zeros(B, self.nh, cache.max_len, self.hs)
        k = self.keys(x, st, cache.real(T))
        cache.write(st["keys"], k)
        shift = 0
        if "pending" in st:  # the pending value of the previous position completes with this x
            raw_v, shift = torch.cat([st["pending"], raw_v], dim=2), -1
        cache.write(st["values"], self.values(raw_v[:, :, :-1], raw_v[:, :, 1:]), shift=shift)
        store_state(st, "pending", raw_v[:, :, -1:])
        if not cache.static and cache.length + T - 1 == 0:  # no completed (key, value) pair yet
            return torch.zeros_like(k)
        allowed = cache.per_forward("memory_mask", T, cache.memory_mask)
        y = F.scaled_dot_product_attention(k, cache.visible(st["keys"], T, shift=-1),
                                           cache.visible(st["values"], T, shift=-1),
                                           attn_mask=allowed[:, None], scale=1.0)
        return torch.where(allowed.any(-1)[:, None, :, None], y, 0.0)  # empty memory -> 0 (and no NaN)


class PersistentMemory(LoggingModule):
    """(B, T, C) -> (B, T, C): a leaky-averaged key retrieves over P learned key/value slots per head."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.layer_idx, self.nh, self.hs = layer_idx, cfg.num_q_heads, cfg.head_dim
        self.size = pmem_size(cfg)
        self.keys = LeakyKeys(cfg, scale_pow=2)
        self.slot_keys = nn.Parameter(torch.randn(self.nh, self.size, self.hs) / math.sqrt(self.hs))
        self.slot_values = nn.Parameter(torch.randn(self.nh, self.size, self.hs) / math.sqrt(self.hs))
        self.out_scale = nn.Parameter(torch.full((self.nh,), -0.05))  # exp(10 o_h)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=cfg.linear_bias)
        self.out.is_residual_out = True
        self.dropout = cfg.attn_dropout
        self.out_dropout = nn.Dropout(cfg.dropout)  # the branch dropout, as the baseline MLP has

    def extra_repr(self):
        return f"heads={self.nh}, slots per head={self.size}"

    @log_io
    def forward(self, x, cache=None):
        B, T, C = x.shape
        st = cache.state(self.layer_idx, "persistent") if cache is not None else None
        k = self.keys(x, st, cache.real(T) if cache is not None else None)
        slot_k = self.slot_keys.to(k.dtype)[None].expand(B, -1, -1, -1)
        slot_v = self.slot_values.to(k.dtype)[None].expand(B, -1, -1, -1)
        z = F.scaled_dot_product_attention(k, slot_k, slot_v, scale=1.0,
                                           dropout_p=self.dropout if self.training else 0.0)
        z = z * torch.exp(SCALAR_MULT * self.out_scale)[:, None, None].to(z.dtype)
        return self.out_dropout(self.out(z.transpose(1, 2).reshape(B, T, C)))


class MemoryMosaics(GPT):
    """The GPT skeleton (embedding, final norm, tied head, loss) with Memory Mosaics blocks."""

    validate_config = staticmethod(validate_config)
    own_fields = ("mm_pmem_size", "mm_key_scale_max")
    # every head has its own keys and values (already unit-normalised: no qk_norm), there is no MLP and
    # no position encoding
    ignored_fields = ("num_kv_heads", "mlp_activation", "mlp_gated", "mlp_hidden_mult", "rope_theta", "qk_norm")
    demo_overrides = {"mm_pmem_size": 8}
    weights_lower_bound = staticmethod(weights_lower_bound)
    width_fields = ("mm_pmem_size",)  # slots per head keep their ratio to dim when a preset is resized
    presets = {
        # llama_1m's width, depth and tokenizer; 384 persistent slots per head make its parameter count
        # match llama_1m (LayerNorm without bias and no positions, as the reference)
        "mm_1m": dict(model_type="mm", dim=128, num_layers=4, num_q_heads=2, head_dim=0, mm_pmem_size=384,
                      norm_type="layernorm", norm_bias=False, norm_eps=1e-5, pos_encoding="none",
                      scale_embedding=False, tie_embeddings=True, tokenizer="bpe2048", max_seq_len=512, **RECIPE_1M),
    }

    def make_layer(self, cfg, layer_idx):
        return ResidualLayer(cfg, ContextMemory(cfg, layer_idx), mlp=PersistentMemory(cfg, layer_idx))

    def decays(self):
        """For modules.probe: (layers, heads) decay rate beta of each context memory's leaky keys
        (k_t averages past keys with weights exp(-beta (t - s)); 1 / beta is its memory span)."""
        return torch.stack([SCALAR_MULT * m.keys.leaky_beta.detach().abs() for m in self.modules()
                            if isinstance(m, ContextMemory)])

    def new_cache(self, batch_size, pad=None, **inputs):
        return MosaicCache(batch_size, self.cfg.max_seq_len, next(self.parameters()).device, pad)


# --- the literal reference (tests and bench/mm_leaky_average.py compare the fast code with it) ------
def recurrence(x, beta, state=None):
    """leaky_average written literally: kbar_t = exp(-beta) kbar_{t-1} + x_t, one step at a time."""
    lam = torch.exp(-beta)[None, :, None]
    h = torch.zeros_like(x[:, :, 0]) if state is None else state
    out = []
    for t in range(x.shape[2]):
        h = lam * h + x[:, :, t]
        out.append(h)
    return torch.stack(out, dim=2)


def naive_context_memory(mem, x):
    """ContextMemory written literally: recurrence keys, look-ahead values, a loop over t."""
    B, T, C = x.shape
    nh, hs = mem.nh, mem.hs
    raw_k = mem.keys.W_k(x).view(B, T, nh, hs).transpose(1, 2)
    kbar = recurrence(raw_k, SCALAR_MULT * mem.keys.leaky_beta.abs())
    sigma = torch.exp((SCALAR_MULT * mem.keys.key_scale).clamp(max=mem.keys.scale_max))[None, :, None, None]
    k = sigma * kbar / kbar.norm(dim=-1, keepdim=True)
    raw_v = mem.W_v(x).view(B, T, nh, hs).transpose(1, 2)
    nxt = torch.cat([raw_v[:, :, 1:], torch.zeros_like(raw_v[:, :, :1])], dim=2)
    gamma = mem.value_mix[None, :, None, None]
    vhat = gamma * raw_v + (1 - gamma) * nxt
    v = torch.exp(SCALAR_MULT * mem.value_scale)[None, :, None, None] * vhat / vhat.norm(dim=-1, keepdim=True)
    y = torch.zeros_like(k)
    for t in range(1, T):
        w = torch.softmax(k[:, :, t:t + 1] @ k[:, :, :t].transpose(-1, -2), dim=-1)  # temperature 1, s <= t-1
        y[:, :, t] = (w @ v[:, :, :t])[:, :, 0]
    return y, k, v
