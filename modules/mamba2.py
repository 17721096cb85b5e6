"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs", arXiv 2405.21060): a language model whose
mixer is a selective state-space model, not attention. No positional encoding: order lives in
the recurrence. Each block is x = x + Mamba2Mixer(RMSNorm(x)), without an MLP (the mixer holds
about 3 x dim^2 parameters at expand 2), then the baseline's final norm and tied head.

Shapes: B batch, T positions, C = dim, E = d_inner = mamba_expand * C, H = E / P heads of
width P = mamba_head_dim, G = mamba_groups groups of B and C shared by H / G heads each (like
grouped-query attention), N = mamba_state_dim, K = mamba_conv_width.

The mixer (Mamba2Simple in state-spaces/mamba):
  z, xBC, dt = in_proj(u)                  widths E, E + 2GN, H
  xBC = silu(causal depthwise conv_K(xBC)); x, B, C = xBC split into E, GN, GN
  dt  = softplus(dt + dt_bias);  A = -exp(A_log)              (one step and one decay per head)
  h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T    (h_t is P x N per head: the whole memory)
  y_t = h_t C_t + D x_t
  out = out_proj(RMSNorm(y * silu(z)))
Attention's duality: x is the value, B the key, C the query, and exp(sum of dt A) a decay mask.

Training runs the chunked state-space-dual form (`ssd_chunked`, "SSD minimal"): inside chunks
of Q positions a decay-masked C B^T product, between chunks a short recurrence over chunk
states; only matrix products, no loop over positions. Decoding keeps a recurrent cache (the last
K - 1 conv inputs and h per head and layer): constant memory and O(1) work per new token.
`ssd_sequential` at the end is the literal recurrence the tests hold both against.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.attention import DecodeCache
from modules.layer import make_norm
from modules.logging import LoggingModule, log_io
from modules.model import GPT, RECIPE_1M
from modules.norm import Norm


def validate_config(cfg):
    if cfg.pos_encoding != "none":
        raise ValueError(f"pos_encoding={cfg.pos_encoding!r} is invalid for model_type='mamba2': the recurrence "
                         "carries order, Mamba-2 has no positional encoding; use 'none'")
    d_inner = cfg.mamba_expand * cfg.dim
    for name in ("mamba_state_dim", "mamba_expand", "mamba_head_dim", "mamba_groups", "mamba_conv_width",
                 "mamba_chunk_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} is invalid for model_type='mamba2': must be a positive integer")
    if d_inner % cfg.mamba_head_dim:
        raise ValueError(f"mamba_head_dim={cfg.mamba_head_dim} is invalid: it must divide d_inner = mamba_expand * dim "
                         f"= {d_inner}")
    heads = d_inner // cfg.mamba_head_dim
    if heads % cfg.mamba_groups:
        raise ValueError(f"mamba_groups={cfg.mamba_groups} is invalid: it must divide the {heads} heads "
                         f"(d_inner / mamba_head_dim)")


def weights_lower_bound(c):
    """Values Mamba-2 holds at least: the embedding and per layer the in and out projections."""
    d_inner = c.mamba_expand * c.dim
    return c.vocab_size * c.dim + c.num_layers * c.dim * (3 * d_inner + 2 * c.mamba_groups * c.mamba_state_dim)


def mixer_flops_per_token(c):
    """Training FLOPs per token of the chunked scan (the parameters' 6N aside): per layer, forward
    2 x Q x (G N + E) inside a chunk (C B^T once per group, then mixing every head's x) plus
    2 x 2 x E x N for the chunk states in and out, times 3 with the backward pass."""
    d_inner = c.mamba_expand * c.dim
    q, n = min(c.mamba_chunk_size, c.max_seq_len), c.mamba_state_dim
    return 3 * c.num_layers * (2 * q * (c.mamba_groups * n + d_inner) + 4 * d_inner * n)


# --- the scan: chunked (training) and the literal recurrence (reference) -------------------------
def segment_sum(a):
    """(..., Q) -> (..., Q, Q): out[i, j] = a[j+1] + ... + a[i] for j <= i, -inf above the
    diagonal, summed within masked copies rather than as a difference of cumulative sums (stable)."""
    q = a.shape[-1]
    a = a[..., :, None].expand(*a.shape, q)  # a[..., i, j] = a[i]
    strict = torch.ones(q, q, dtype=torch.bool, device=a.device).tril(-1)
    sums = a.masked_fill(~strict, 0).cumsum(dim=-2)
    return sums.masked_fill(~torch.ones(q, q, dtype=torch.bool, device=a.device).tril(), float("-inf"))


def ssd_chunked(x, log_decay, b, c, chunk_size, state=None):
    """The state-space-dual scan in chunks. x (B, T, H, P) inputs already times dt; log_decay
    (B, T, H) = dt A (<= 0); b, c (B, T, G, N), each group shared by R = H / G heads; state
    (B, H, P, N) entering position 0 (None = 0). Returns y (B, T, H, P) with y_t = h_t c_t, and h
    after the last position (B, H, P, N). Positions past T (padding to whole chunks) carry no
    input and no decay, so h is exact."""
    batch, T, heads, p = x.shape
    groups, n_state = b.shape[2], b.shape[3]
    r = heads // groups
    q = min(chunk_size, T)
    n = -(-T // q)
    if n * q != T:
        pad = n * q - T
        x, b, c = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, b, c))
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
    x = x.reshape(batch, n, q, groups, r, p)
    b, c = (t.reshape(batch, n, q, groups, n_state) for t in (b, c))
    a = log_decay.reshape(batch, n, q, groups, r).permute(0, 3, 4, 1, 2)  # (B, G, R, n, q)
    a_cum = a.cumsum(dim=-1)
    # 1. inside each chunk: y_i = sum_{j<=i} (c_i . b_j) exp(a_{j+1} + .. + a_i) x_j  (c . b once per group)
    scores = torch.einsum("bclgn,bcsgn->bgcls", c, b)[:, :, None] * torch.exp(segment_sum(a))
    y = torch.einsum("bgrcls,bcsgrp->bclgrp", scores, x)
    # 2. each chunk's own final state, from its inputs decayed to its end
    to_end = torch.exp(a_cum[..., -1:] - a_cum).permute(0, 3, 4, 1, 2)[..., None]  # (B, n, q, G, R, 1)
    chunk_states = torch.einsum("bcsgn,bcsgrp->bcgrpn", b, x * to_end)
    # 3. the state entering each chunk: a recurrence over chunks, written as one decay matrix
    start = torch.zeros_like(chunk_states[:, :1]) if state is None else \
        state.reshape(batch, 1, groups, r, p, n_state).to(chunk_states.dtype)
    chunk_states = torch.cat([start, chunk_states], dim=1)  # (B, n + 1, G, R, P, N)
    across = torch.exp(segment_sum(F.pad(a_cum[..., -1], (1, 0))))  # (B, G, R, n + 1, n + 1)
    entering = torch.einsum("bgrzc,bcgrpn->bzgrpn", across, chunk_states)
    # 4. what the entering state adds at each position, decayed from the chunk's start
    from_start = torch.exp(a_cum).permute(0, 3, 4, 1, 2)[..., None]  # (B, n, q, G, R, 1)
    y = y + torch.einsum("bclgn,bcgrpn->bclgrp", c, entering[:, :-1]) * from_start
    return y.reshape(batch, n * q, heads, p)[:, :T], entering[:, -1].reshape(batch, heads, p, n_state)


def ssd_step(x, log_decay, b, c, state):
    """One position of the recurrence: x (B, H, P), log_decay (B, H), b, c (B, G, N), state
    (B, H, P, N) -> y (B, H, P) and the new state (groups broadcast over their heads)."""
    batch, heads, p = x.shape
    groups, n = b.shape[1], b.shape[2]
    grouped = (batch, groups, heads // groups, p, n)
    state = torch.exp(log_decay).view(*grouped[:3], 1, 1) * state.view(grouped) \
        + x.view(*grouped[:4], 1) * b.view(batch, groups, 1, 1, n)
    y = (state * c.view(batch, groups, 1, 1, n)).sum(-1)
    return y.reshape(batch, heads, p), state.reshape(batch, heads, p, n)


# --- the model ---------------------------------------------------------------------------------------
class Mamba2Cache(DecodeCache):
    """Recurrent decoding state of every layer: conv[layer] (B, E + 2GN, K - 1), the last conv
    inputs; ssm[layer] (B, H, P, N) in fp32. Neither grows with the tokens generated. One tensor
    per layer, as KVCache keeps them: a compiled step writes each in place, whereas writing a
    layer's slice of one stacked tensor becomes a copy of every layer's state, per layer."""

    def __init__(self, cfg, batch_size, device, dtype, pad=None):
        super().__init__(batch_size, cfg.max_seq_len, device, pad)
        d_inner = cfg.mamba_expand * cfg.dim
        heads, channels = d_inner // cfg.mamba_head_dim, d_inner + 2 * cfg.mamba_groups * cfg.mamba_state_dim
        self.conv = [torch.zeros(batch_size, channels, cfg.mamba_conv_width - 1, device=device, dtype=dtype)
                     for _ in range(cfg.num_layers)]
        self.ssm = [torch.zeros(batch_size, heads, cfg.mamba_head_dim, cfg.mamba_state_dim, device=device,
                                dtype=torch.float32) for _ in range(cfg.num_layers)]


class Mamba2Mixer(LoggingModule):
    """(B, T, C) -> (B, T, C): the SSD mixer."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.layer_idx, self.chunk_size = layer_idx, cfg.mamba_chunk_size
        self.d_inner, self.head_dim = cfg.mamba_expand * cfg.dim, cfg.mamba_head_dim
        self.heads, self.groups, self.state_dim = self.d_inner // self.head_dim, cfg.mamba_groups, cfg.mamba_state_dim
        self.conv_channels = self.d_inner + 2 * self.groups * self.state_dim
        self.in_proj = nn.Linear(cfg.dim, self.d_inner + self.conv_channels + self.heads, bias=cfg.linear_bias)
        self.conv = nn.Conv1d(self.conv_channels, self.conv_channels, cfg.mamba_conv_width, groups=self.conv_channels)
        # dt starts log-uniform in [1e-3, 0.1]; dt_bias is its inverse softplus (the paper's init)
        dt = torch.exp(torch.rand(self.heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.heads).uniform_(1, 16)))  # decay rates A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(self.heads))  # skip connection per head
        self.norm = Norm(self.d_inner, "rmsnorm", True, False, cfg.norm_eps)
        self.out_proj = nn.Linear(self.d_inner, cfg.dim, bias=cfg.linear_bias)
        self.out_proj.is_residual_out = True

    @log_io
    def convolve(self, xbc, cache=None):
        """Causal depthwise convolution then SiLU: (B, T, E + 2GN) -> same shape. With a cache,
        the K - 1 inputs before these come from it and it keeps the last K - 1."""
        xbc = xbc.transpose(1, 2)
        if cache is None:
            return F.silu(self.conv(F.pad(xbc, (self.conv.kernel_size[0] - 1, 0)))).transpose(1, 2)
        state = cache.conv[self.layer_idx]
        window = torch.cat([state, xbc.to(state.dtype)], dim=-1)
        state.copy_(window[..., window.shape[-1] - state.shape[-1]:])
        # the same convolution as K multiply-adds: a conv kernel call costs ~70 us at one token on a CPU
        out = (window.unfold(-1, self.conv.kernel_size[0], 1) * self.conv.weight[:, None, 0, :]).sum(-1)
        return F.silu(out + self.conv.bias[:, None]).transpose(1, 2)

    @log_io
    def scan(self, x, dt, b, c, cache=None):
        """x (B, T, H, P), dt (B, T, H), b, c (B, T, G, N) -> y (B, T, H, P), in fp32; a cache
        supplies the state entering and keeps the state leaving."""
        A = -torch.exp(self.A_log.float())
        x, dt, b, c = x.float(), dt.float(), b.float(), c.float()
        state = None if cache is None else cache.ssm[self.layer_idx]
        with torch.autocast(x.device.type, enabled=False):
            if state is not None and x.shape[1] == 1:  # one new token: the recurrence itself
                y, new_state = ssd_step(x[:, 0] * dt[:, 0, :, None], dt[:, 0] * A, b[:, 0], c[:, 0], state)
                y = y[:, None]
            else:
                y, new_state = ssd_chunked(x * dt[..., None], dt * A, b, c, self.chunk_size, state)
        if state is not None:
            state.copy_(new_state)
        return y + self.D.float()[:, None] * x

    def mixing_matrix(self, u):
        """The duality written out: M (B, H, T, T) and x (B, T, H, P) with the scan's output
        y_i = sum_j M[i, j] x_j (before the D skip), M[i, j] = (C_i . B_j) exp(dt A summed over
        (j, i]) dt_j: a causal, decay-masked attention matrix without softmax."""
        _, x, dt, b, c = (t.float() for t in self.project(u))
        per_group = self.heads // self.groups
        b, c = (t.repeat_interleave(per_group, dim=2) for t in (b, c))  # (B, T, H, N)
        decay = torch.exp(segment_sum((dt * -torch.exp(self.A_log.float())).transpose(1, 2)))  # (B, H, T, T)
        m = torch.einsum("bihn,bjhn->bhij", c, b) * decay * dt.transpose(1, 2)[:, :, None, :]
        return m, x

    @torch.no_grad()
    def mixing_map(self, u):
        """(B, H, T, T) for modules.probe: |M| of mixing_matrix with rows scaled to sum to 1 (it
        is no softmax: signs and each row's total are dropped)."""
        m = self.mixing_matrix(u)[0].abs()
        return m / m.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)

    @log_io
    def project(self, u, cache=None):
        """(B, T, C) -> the gate z (B, T, E), x (B, T, H, P), the steps dt (B, T, H) and b, c
        (B, T, G, N): the input projection, softplus and the convolution, before the scan."""
        batch, T, _ = u.shape
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_channels, self.heads], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        if cache is not None and not cache.static:  # left padding (in the prompt only): no input and no
            real = cache.real(T)[..., None].to(u.dtype)       # decay, as if the row began later
            xbc, dt = xbc * real, dt * real
        x, b, c = self.convolve(xbc, cache).split(
            [self.d_inner, self.groups * self.state_dim, self.groups * self.state_dim], dim=-1)
        grouped = (batch, T, self.groups, self.state_dim)
        return z, x.reshape(batch, T, self.heads, self.head_dim), dt, b.reshape(grouped), c.reshape(grouped)

    @log_io
    def forward(self, u, positions=None, cache=None):
        z, x, dt, b, c = self.project(u, cache)
        y = self.scan(x, dt, b, c, cache).flatten(2).to(u.dtype)  # (B, T, E)
        return self.out_proj(self.norm(y * F.silu(z)))


class Mamba2Block(LoggingModule):
    """(B, T, C) -> (B, T, C): x + dropout(mixer(norm(x))); no MLP, as in the Mamba-2 language models."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.norm = make_norm(cfg)
        self.mixer, self.dropout = Mamba2Mixer(cfg, layer_idx), nn.Dropout(cfg.dropout)

    @log_io
    def forward(self, x, positions=None, cache=None):
        return x + self.dropout(self.mixer(self.norm(x), positions, cache))


class Mamba2(GPT):
    """Token embedding -> num_layers Mamba-2 blocks -> final norm -> tied head (the baseline's)."""

    own_fields = ("mamba_state_dim", "mamba_expand", "mamba_head_dim", "mamba_groups", "mamba_conv_width",
                  "mamba_chunk_size")
    ignored_fields = ("num_q_heads", "num_kv_heads", "mlp_activation", "mlp_gated", "mlp_hidden_mult", "rope_theta",
                      "qk_norm", "attn_dropout", "post_branch_norm", "zero_init_proj")
    demo_overrides = {"mamba_state_dim": 8, "mamba_head_dim": 8, "mamba_chunk_size": 4}
    validate_config = staticmethod(validate_config)
    weights_lower_bound = staticmethod(weights_lower_bound)
    mixer_flops_per_token = staticmethod(mixer_flops_per_token)
    presets = {
        # llama_1m's width, tokenizer and context; 6 blocks of d_state 64 and 8 heads of 32 match its
        # parameters (970,512 against 983,680, -1.3%). No MLP, no positions, as in the paper's models
        "mamba2_1m": dict(model_type="mamba2", dim=128, num_layers=6, mamba_expand=2, mamba_head_dim=32,
                          mamba_state_dim=64, mamba_groups=1, mamba_conv_width=4, mamba_chunk_size=64,
                          norm_type="rmsnorm", pos_encoding="none", tokenizer="bpe2048", max_seq_len=512, **RECIPE_1M),
    }

    def make_layer(self, cfg, layer_idx):
        return Mamba2Block(cfg, layer_idx)

    def decays(self):
        """For modules.probe: (layers, heads) decay rate of each head's state at its resting step,
        exp(A_log) x softplus(dt_bias): h keeps exp(-rate) of itself per token when the input
        leaves dt at its bias (the input moves dt, and with it the rate, token by token)."""
        return torch.stack([torch.exp(b.mixer.A_log.detach()) * F.softplus(b.mixer.dt_bias.detach())
                            for b in self.layers])

    def new_cache(self, batch_size, pad=None, **inputs):
        """A recurrent cache for batch_size rows; pad (B,) = left-padding slots per row."""
        p = next(self.parameters())
        return Mamba2Cache(self.cfg, batch_size, p.device, p.dtype, pad)


# --- the literal reference: the recurrence, one position at a time (tests only) ---------------------
def ssd_sequential(x, log_decay, b, c, state=None):
    """h_t = exp(log_decay_t) h_{t-1} + x_t b_t^T;  y_t = h_t c_t, looping over t.
    Same arguments and results as ssd_chunked."""
    batch, T, heads, p = x.shape
    h = x.new_zeros(batch, heads, p, b.shape[-1]) if state is None else state.clone()
    per_group = heads // b.shape[2]
    ys = []
    for t in range(T):
        bt = b[:, t].repeat_interleave(per_group, dim=1)  # (B, H, N)
        ct = c[:, t].repeat_interleave(per_group, dim=1)
        h = torch.exp(log_decay[:, t])[:, :, None, None] * h + x[:, t, :, :, None] * bt[:, :, None, :]
        ys.append((h * ct[:, :, None, :]).sum(-1))
    return torch.stack(ys, dim=1), h
