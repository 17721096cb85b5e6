"""Fractal-Head Attention (FHA): query head i is split into s^i sub-heads of size D / s^i.

With H query heads, head_dim D and split factor s, level i (= query head i) attends with s^i
contiguous sub-heads of its D channels, so one attention block mixes heads of several sizes
(H=3, s=2: 1x64, 2x32, 4x16). Keys and values are shared as in grouped-query attention (level
i reads KV head i // (H / K)) and sliced the same way; each level's sub-head outputs are
concatenated back into the level's D slot before the usual output projection. Parameters and
Q.K / A.V FLOPs equal those of ordinary attention with the same (H, K, D); with s = 1 it *is*
ordinary attention.

Knobs (ModelConfig):
  fractal_split     s >= 1
  fractal_scale     'full'     logits * 1/sqrt(D) for every sub-head (the original)
                    'per_head' logits * 1/sqrt(D / s^i), the usual scale of the sub-head's size
  fractal_rope      'subband'  the original: q and k are rotated once at the full size D, then
                               sliced, so sub-head r of level i holds RoPE pairs r*d/2..(r+1)*d/2
                               (a band of frequencies) and every level reads the same rotated key
                    'per_head' each sub-head gets fresh RoPE at its own size d = D / s^i, so each
                               level rotates the shared key its own way

The original rotates in the interleaved convention (pair j = channels 2j, 2j+1), where
"rotate, then slice contiguously" keeps pairs whole. The sandbox's RoPE is rotate-half (pair j
= channels j and j + D/2, see Attention), so a 'subband' sub-head takes its band's channels
from both halves. That is the original up to a fixed permutation of the q/k projection rows,
and with s = 1 it is exactly the baseline attention.

Vectorised: one scaled_dot_product_attention call per level (H calls), no loop over sub-heads
or positions. The cache holds keys as project_qkv returns them: rotated for 'subband' (as the
baseline), un-rotated for 'per_head', where levels rotate the shared key differently.
"""
import math

import torch
import torch.nn.functional as F

from modules.attention import Attention, apply_rope, rope_frequencies, rope_tables
from modules.layer import ResidualLayer
from modules.logging import log_io
from modules.model import GPT, RECIPE_1M


def level_sizes(cfg):
    """[(number of sub-heads, sub-head size)] for each level i = 0..H-1."""
    s, D = cfg.fractal_split, cfg.head_dim
    return [(s ** i, D // s ** i) for i in range(cfg.num_q_heads)]


def validate_config(cfg):
    """Clear errors for FHA settings that cannot work (called where a config enters)."""
    s, H, D = cfg.fractal_split, cfg.num_q_heads, cfg.head_dim
    if s < 1:
        raise ValueError(f"fractal_split={s!r} is invalid: must be an integer >= 1")
    if s > 1 and H - 1 > math.log(D, s) + 1e-9:  # s**(H-1) > D: refused before building a huge integer
        raise ValueError(f"num_q_heads={H} is invalid for fractal_split={s} with head_dim={D}: the last level would "
                         f"split a head of {D} channels into {s}**{H - 1} sub-heads; at most "
                         f"{1 + int(math.log(D, s) + 1e-9)} query heads fit")
    if D % s ** (H - 1):
        raise ValueError(f"head_dim={D} is invalid for fractal_split={s} with num_q_heads={H}: "
                         f"it must be divisible by fractal_split**(num_q_heads-1) = {s ** (H - 1)}")
    if cfg.pos_encoding == "rope" and (D // s ** (H - 1)) % 2:
        raise ValueError(f"head_dim={D} is invalid for RoPE with fractal_split={s}, num_q_heads={H}: the "
                         f"smallest sub-head has odd size {D // s ** (H - 1)}; RoPE needs even sub-head sizes")


class FractalHeadAttention(Attention):
    """(B, T, dim) -> (B, T, dim). Same projections as Attention; the heads are partitioned."""

    def __init__(self, cfg, layer_idx):
        super().__init__(cfg, layer_idx)
        self.levels = level_sizes(cfg)
        self.group = cfg.num_q_heads // cfg.num_kv_heads
        self.scales = [(cfg.head_dim if cfg.fractal_scale == "full" else d) ** -0.5 for _, d in self.levels]
        self.subband = cfg.pos_encoding == "rope" and cfg.fractal_rope == "subband"
        self.per_head_rope = cfg.pos_encoding == "rope" and cfg.fractal_rope == "per_head"
        if self.per_head_rope:
            self.rope = None  # rotation happens per sub-head, after the split
            for i, (n, d) in enumerate(self.levels):
                cos, sin = rope_tables(rope_frequencies(d, cfg.rope_theta), torch.arange(cfg.max_seq_len))  # (max_seq_len, d), for all n sub-heads
                self.register_buffer(f"cos_{i}", cos, persistent=False)
                self.register_buffer(f"sin_{i}", sin, persistent=False)

    def extra_repr(self):
        layout = ", ".join(f"{n}x{d}" for n, d in self.levels)
        return f"levels (sub-heads x size): {layout}; kv_heads={self.num_kv_heads}"

    def split_qk(self, x, level):
        """q or k of one level, (B, T, D) -> (B, n, T, d): the level's n sub-heads."""
        n, d = self.levels[level]
        B, T = x.shape[:2]
        if self.subband:  # sub-head r = RoPE pairs r*d/2..(r+1)*d/2 = those channels of both halves
            return x.view(B, T, 2, n, d // 2).permute(0, 3, 1, 2, 4).reshape(B, n, T, d)
        return x.reshape(B, T, n, d).transpose(1, 2)

    def rope_per_head(self, x, level, positions):
        """'per_head' RoPE: x (B, n, T, d) rotated at size d, positions (T,) or (B, T)."""
        cos, sin = getattr(self, f"cos_{level}")[positions], getattr(self, f"sin_{level}")[positions]
        if cos.dim() == 3:  # (B, T, d): one position row per batch row
            cos, sin = cos[:, None], sin[:, None]
        return apply_rope(x, cos, sin)

    @log_io
    def attend_level(self, level, q, k, v, q_positions, k_positions, mask, is_causal):
        """Level i: q (B, T, D), k/v (B, S, D) -> (B, T, D) through s^i sub-heads of size D/s^i."""
        n, d = self.levels[level]
        B, T, S = q.shape[0], q.shape[1], k.shape[1]
        q, k = self.split_qk(q, level), self.split_qk(k, level)
        v = v.reshape(B, S, n, d).transpose(1, 2)  # values are sliced contiguously, as in the original
        if self.per_head_rope:
            q, k = self.rope_per_head(q, level, q_positions), self.rope_per_head(k, level, k_positions)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           scale=self.scales[level])
        return y.transpose(1, 2).reshape(B, T, n * d)

    @log_io
    def forward(self, x, positions, cache=None):
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x, positions)  # (B, H, T, D), (B, K, T, D); rotated unless per_head
        mask, is_causal, k_positions = None, True, positions
        if cache is not None:
            k, v, mask, is_causal = self.read_cache(k, v, cache)
            if self.per_head_rope:
                k_positions = cache.positions(k.shape[2], start=0)
        out = torch.cat([self.attend_level(i, q[:, i], k[:, i // self.group], v[:, i // self.group],
                                           positions, k_positions, mask, is_causal)
                         for i in range(len(self.levels))], dim=-1)
        return self.out(out)


class FractalHeadGPT(GPT):
    """The baseline GPT with Fractal-Head Attention in every layer."""

    validate_config = staticmethod(validate_config)
    own_fields = ("fractal_split", "fractal_scale", "fractal_rope")
    _fha_1m = dict(model_type="fha", dim=64, num_layers=4, num_q_heads=3, num_kv_heads=1, head_dim=64, fractal_split=2,
                   mlp_gated=True, mlp_activation="silu", mlp_hidden_mult=8.0, tokenizer="bpe2048", max_seq_len=512,
                   **RECIPE_1M)
    presets = {
        # sized like the original shipped model (3 query heads: 1x64, 2x32, 4x16)
        "fha_1m": _fha_1m,
        # its fair control: identical except split 1 (three ordinary 64-wide heads)
        "fha_1m_control": dict(_fha_1m, fractal_split=1),
    }
    controls = {"fha_1m_control": "fha_1m"}

    def make_layer(self, cfg, layer_idx):
        return ResidualLayer(cfg, FractalHeadAttention(cfg, layer_idx))


# --- the literal reference (tests and bench/fha_throughput.py compare the fast code with it) ---------
def naive_reference(attn, cfg, x):
    """The original's computation written literally: a Python loop over levels and sub-heads,
    explicit softmax over a causal mask. 'subband' RoPE is the original's: interleaved pairs
    (channels 2j, 2j+1), applied once at the full head size, then contiguous slices. The module
    keeps q/k in rotate-half order (pair j = channels j, j + D/2), so its projections are first
    put into the original's channel order. 'per_head' rotates each slice at its own size."""
    B, T, _ = x.shape
    H, K, D, s = cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.fractal_split
    q, k, v = attn.qkv(x).view(B, T, H + 2 * K, D).split([H, K, K], dim=2)  # (B, T, heads, D)
    pos = torch.arange(T).float()
    if cfg.pos_encoding == "rope" and cfg.fractal_rope == "subband":
        def interleaved_rope(t):
            t = t.view(B, T, -1, 2, D // 2).transpose(-1, -2).reshape(B, T, -1, D // 2, 2)  # original order
            freq = rope_frequencies(D, cfg.rope_theta)
            rotation = torch.polar(torch.ones(T, D // 2), pos[:, None] * freq)[:, None]  # (T, 1, D/2)
            return torch.view_as_real(torch.view_as_complex(t.contiguous()) * rotation).flatten(-2)
        q, k = interleaved_rope(q), interleaved_rope(k)
    out = []
    for i in range(H):
        n, d = s ** i, D // s ** i
        level = []
        for r in range(n):
            qs = q[:, :, i, r * d:(r + 1) * d]
            ks = k[:, :, i // (H // K), r * d:(r + 1) * d]
            vs = v[:, :, i // (H // K), r * d:(r + 1) * d]
            if cfg.pos_encoding == "rope" and cfg.fractal_rope == "per_head":
                ang = pos[:, None] * rope_frequencies(d, cfg.rope_theta)
                cos, sin = ang.cos(), ang.sin()

                def rot(t):
                    a, b = t[..., :d // 2], t[..., d // 2:]
                    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
                qs, ks = rot(qs), rot(ks)
            scale = 1 / math.sqrt(D if cfg.fractal_scale == "full" else d)
            scores = (qs @ ks.transpose(1, 2)) * scale
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            level.append(scores.softmax(-1) @ vs)
        out.append(torch.cat(level, dim=-1))
    return attn.out(torch.cat(out, dim=-1))
