"""Causal self-attention (multi-head, grouped-query, multi-query) with RoPE and a KV cache.

Shapes: B batch, T new positions, H query heads, K key/value heads, D head_dim.
"""
import torch
import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io


def _tensors(value):
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


class DecodeCache:
    """What every architecture's decoding cache knows: `length` slots are filled (the model adds
    the new tokens after each forward), up to max_len. `pad` (B,) counts the left-padding slots
    of each row (batched prompts of different lengths are left-padded): those slots are never
    attended to, and positions are counted from each row's first real token.

    After the prompt, `make_static()` turns `length` into a 0-d tensor: from then on each forward
    adds one token and reads all max_len slots behind a mask, so every step has the same shapes
    and one compiled decode step serves the whole generation (the gpt-fast approach). Modules
    read and write their buffers through `write` / `visible` / `new_slots`, which work both ways."""

    def __init__(self, batch_size, max_len, device, pad=None):
        self.max_len, self.length, self.static = max_len, 0, False
        self.pad = torch.zeros(batch_size, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self._memo_for, self._memo = None, {}

    def make_static(self):
        """Fixed shapes from now on: length becomes a 0-d long tensor, every forward adds one token."""
        self.length, self.static = torch.tensor(self.length, device=self.pad.device), True
        if self.pad.is_cuda:  # CUDA graphs replay fixed addresses: pin every tensor the cache holds
            for tensor in _tensors(vars(self)):
                torch._dynamo.mark_static_address(tensor)

    def nbytes(self):
        """Bytes of the decoding state this cache holds (a KV cache's buffers are allocated for the
        full context up front, so this is its size at max_len), its per-forward masks aside."""
        state = {name: value for name, value in vars(self).items() if name != "_memo"}
        return sum(t.numel() * t.element_size() for t in _tensors(state))

    def new_slots(self, num_new):
        """(num_new,) slots the new tokens go to."""
        return self.length + torch.arange(num_new, device=self.pad.device)

    def visible_slots(self, num_new, shift=0):
        """Slots a forward adding num_new tokens reads: 0 .. length + num_new + shift - 1, or all
        max_len slots when static (the mask hides the unfilled ones)."""
        return torch.arange(self.max_len if self.static else self.length + num_new + shift, device=self.pad.device)

    def write(self, buffer, new, shift=0):
        """Write new (..., num_new, D) into buffer (..., max_len, D) from slot length + shift on."""
        if self.static:
            buffer[..., self.new_slots(new.shape[-2]) + shift, :] = new
        else:
            start = self.length + shift
            buffer[..., start:start + new.shape[-2], :] = new

    def visible(self, buffer, num_new, shift=0):
        """buffer (..., max_len, D) cut to visible_slots (all of it when static)."""
        return buffer if self.static else buffer[..., :self.length + num_new + shift, :]

    def real(self, num_new):
        """(B, num_new) bool: True where a new slot holds a real token, False for left padding."""
        return self.new_slots(num_new)[None, :] >= self.pad[:, None]

    def positions(self, num, start=None):
        """(B, num) positions of slots start.. (default: the next free slot), counted from each
        row's first real token."""
        start = self.length if start is None else start
        slots = start + torch.arange(num, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp_min(0)

    def attention_mask(self, num_new):
        """(B, 1, num_new, visible slots) bool for the new tokens, or None when none is needed:
        no padding, and either a prompt written from slot 0 (plain causal) or one new token (it
        sees every slot). Built once per forward and shared by all layers."""
        return self.per_forward("attention_mask", num_new, self._build_mask)

    def per_forward(self, name, num_new, build):
        """build(num_new), computed once per forward (a cache length and a number of new tokens)
        and shared by every layer that asks for `name`. Static steps build it each time: the
        compiler merges the copies."""
        if self.static:
            return build(num_new)
        if self._memo_for != (self.length, num_new):
            self._memo_for, self._memo = (self.length, num_new), {}
        if name not in self._memo:
            self._memo[name] = build(num_new)
        return self._memo[name]

    def _build_mask(self, num_new):
        if not self.static and not bool(self.pad.any()) and (self.length == 0 or num_new == 1):
            return None
        q = self.new_slots(num_new)[:, None]
        k = self.visible_slots(num_new)[None, :]
        real = k[None] >= self.pad[:, None, None]
        # a padding query may see itself, so no row is empty (its output is never used)
        return (((k <= q)[None] & real) | (k == q)[None])[:, None]


class KVCache(DecodeCache):
    """Key/value buffers of every attention layer: k[layer], v[layer] (B, K, max_len, D), one
    tensor each so that a compiled step writes them in place."""

    def __init__(self, num_layers, batch_size, num_kv_heads, max_len, head_dim, device, dtype, pad=None):
        super().__init__(batch_size, max_len, device, pad)
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]


def rope_frequencies(dim, theta):
    """(dim/2,) inverse frequencies theta^(-2j/dim) of RoPE (and of the sinusoidal table)."""
    return 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim)


def rope_tables(inv_freq, positions):
    """cos, sin of shape (len(positions), d) for rotate-half RoPE with d/2 frequencies inv_freq:
    each angle appears twice, for channel j and its partner j + d/2."""
    angles = torch.outer(positions.float(), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate-half RoPE: channel j pairs with j + d/2. x (..., d); cos/sin broadcastable to (..., d)
    from rope_tables. Written as x*cos + (-x2, x1)*sin: five elementwise ops, which matters when
    decoding one token at a time."""
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    return (x32 * cos + torch.cat([-x2, x1], dim=-1) * sin).type_as(x)


class RotaryEmbedding(LoggingModule):
    """RoPE (rotate-half form). cos/sin tables are computed once for max_seq_len positions."""

    def __init__(self, head_dim, max_seq_len, theta=10000.0):
        super().__init__()
        cos, sin = rope_tables(rope_frequencies(head_dim, theta), torch.arange(max_seq_len))  # (max_seq_len, D)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @log_io
    def forward(self, x, positions):
        """x: (B, heads, T, D); positions: (T,) or (B, T). Returns x rotated, same shape."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D) or (B, T, D)
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]
        return apply_rope(x, cos, sin)


class Attention(LoggingModule):
    """(B, T, dim) -> (B, T, dim). One fused qkv projection, scaled_dot_product_attention, output projection."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_q_heads, self.num_kv_heads, self.head_dim = cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
        self.dropout, self.qk_norm = cfg.attn_dropout, cfg.qk_norm
        qkv_dim = (cfg.num_q_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, qkv_dim, bias=cfg.linear_bias)
        self.out = nn.Linear(cfg.num_q_heads * cfg.head_dim, cfg.dim, bias=cfg.linear_bias)
        self.out.is_residual_out = True
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta) if cfg.pos_encoding == "rope" else None

    @log_io
    def project_qkv(self, x, positions):
        """(B, T, dim) -> q (B, H, T, D), k and v (B, K, T, D), RoPE applied to q and k."""
        B, T, _ = x.shape
        H, K = self.num_q_heads, self.num_kv_heads
        qkv = self.qkv(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, H + 2K, T, D)
        if self.qk_norm:  # every q and k head to unit RMS: attention logits stay bounded
            qkv = torch.cat([F.rms_norm(qkv[:, :H + K], (self.head_dim,)), qkv[:, H + K:]], dim=1)
        if self.rope is None:
            return qkv.split([H, K, K], dim=1)
        qk = self.rope(qkv[:, :H + K], positions)  # q and k rotated in one call
        return qk[:, :H], qk[:, H:], qkv[:, H + K:]

    @log_io
    def attend(self, q, k, v, mask=None, is_causal=True):
        """q (B, H, T, D), k/v (B, K, S, D) -> (B, H, T, D); K divides H (grouped-query)."""
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.num_q_heads != self.num_kv_heads)

    def read_cache(self, k, v, cache):
        """Write the new k/v into the cache; return all cached k/v, the mask and whether it is causal."""
        keys, values, num_new = cache.k[self.layer_idx], cache.v[self.layer_idx], k.shape[2]
        cache.write(keys, k)
        cache.write(values, v)
        mask = cache.attention_mask(num_new)
        is_causal = mask is None and cache.length == 0  # else: one new token, which sees every slot
        return cache.visible(keys, num_new), cache.visible(values, num_new), mask, is_causal

    @log_io
    def forward(self, x, positions, cache=None):
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x, positions)
        mask, is_causal = None, True
        if cache is not None:
            k, v, mask, is_causal = self.read_cache(k, v, cache)
        y = self.attend(q, k, v, mask, is_causal)
        return self.out(y.transpose(1, 2).reshape(B, T, -1))
