"""Encoder-decoder transformer with a copy (pointer-generator) head, for MoMeM's summarizer and
generator: read a source text (a person's record), then write an answer to a question.

    logits, loss, terms = model(tokens, targets, source=source)
        source (B, S) ids, right-padded with PAD_ID (padding is masked everywhere: no real
        position ever attends to it); tokens/targets (B, T) the decoder side, as for any model.
    cache = model.new_cache(B, pad, source=source)   runs the encoder once per generation

Pre-norm blocks from the shared pieces: the encoder's layers are the baseline ResidualLayer
with bidirectional attention (RoPE, a key-padding mask); a decoder layer adds cross-attention
between its causal self-attention and its MLP. The token embedding is shared by encoder,
decoder and output head.

Copy head (See et al. 2017), on with encdec_copy: one attention of the final decoder state
over the encoder output gives a distribution over source positions; a learned gate p_gen mixes
  p(w) = p_gen * softmax(vocab logits)(w) + (1 - p_gen) * sum of attention on source tokens = w,
so copying a name or a value character by character is easy for a tiny model. The model then
returns log p(w) as its logits (softmax of them is p again), so the loss, top-k and sampling
work unchanged.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.attention import Attention, KVCache
from modules.layer import ResidualLayer, make_norm
from modules.logging import LoggingModule, log_io
from modules.mlp import MLP
from config import PAD_ID
from modules.model import GPT


def validate_config(cfg):
    if cfg.encoder_layers < 1:
        raise ValueError(f"encoder_layers={cfg.encoder_layers!r} is invalid: must be a positive integer")


class EncoderAttention(Attention):
    """Bidirectional self-attention over the source; `key_mask` (B, 1, 1, S) bool hides padding."""

    @log_io
    def forward(self, x, positions, cache=None, key_mask=None):
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x, positions)
        return self.out(self.attend(q, k, v, key_mask, is_causal=False).transpose(1, 2).reshape(B, T, -1))


class CrossAttention(LoggingModule):
    """Decoder queries (B, T, dim) over encoder keys/values (project_memory, once per source)."""

    def __init__(self, cfg):
        super().__init__()
        self.num_q_heads, self.num_kv_heads, self.head_dim = cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
        self.q = nn.Linear(cfg.dim, cfg.num_q_heads * cfg.head_dim, bias=cfg.linear_bias)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.num_kv_heads * cfg.head_dim, bias=cfg.linear_bias)
        self.out = nn.Linear(cfg.num_q_heads * cfg.head_dim, cfg.dim, bias=cfg.linear_bias)
        self.out.is_residual_out = True
        self.qk_norm = cfg.qk_norm

    @log_io
    def project_memory(self, memory):
        """(B, S, dim) encoder output -> k, v (B, K, S, D)."""
        B, S, _ = memory.shape
        k, v = self.kv(memory).view(B, S, 2 * self.num_kv_heads, self.head_dim).transpose(1, 2).chunk(2, dim=1)
        return (F.rms_norm(k, (self.head_dim,)) if self.qk_norm else k), v

    @log_io
    def forward(self, x, memory_kv, key_mask):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.num_q_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q = F.rms_norm(q, (self.head_dim,))
        y = F.scaled_dot_product_attention(q, *memory_kv, attn_mask=key_mask,
                                           enable_gqa=self.num_q_heads != self.num_kv_heads)
        return self.out(y.transpose(1, 2).reshape(B, T, -1))


class DecoderLayer(LoggingModule):
    """x + self_attn(norm(x)), then x + cross_attn(norm(x), source), then x + mlp(norm(x))."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.self_norm, self.self_attn = make_norm(cfg), Attention(cfg, layer_idx)
        self.cross_norm, self.cross_attn = make_norm(cfg), CrossAttention(cfg)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg.dim, cfg.mlp_hidden_dim, cfg.mlp_activation, cfg.mlp_gated, cfg.linear_bias, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    @log_io
    def forward(self, x, positions, cache, memory_kv, key_mask):
        x = x + self.dropout(self.self_attn(self.self_norm(x), positions, cache))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory_kv, key_mask))
        return x + self.mlp(self.mlp_norm(x))


class SourceCache(KVCache):
    """The decoder's KV cache plus what the encoder computed once: the source ids, its key
    mask, its output and every decoder layer's cross-attention keys/values."""

    def __init__(self, model, batch_size, pad, source):
        cfg, p = model.cfg, next(model.parameters())
        super().__init__(cfg.num_layers, batch_size, cfg.num_kv_heads, cfg.max_seq_len, cfg.head_dim, p.device,
                         p.dtype, pad)
        self.source = source.to(p.device)
        self.memory, self.key_mask = model.encode(self.source)
        self.memory_kv = [layer.cross_attn.project_memory(self.memory) for layer in model.layers]


class EncoderDecoder(GPT):
    """Encoder layers + decoder layers (GPT's `layers`) + an optional copy head."""

    validate_config = staticmethod(validate_config)
    own_fields = ("encoder_layers", "encdec_copy")
    ignored_fields = ("post_branch_norm",)  # the decoder layer has no post-branch norms
    # its trained models are MoMeM's summarizer and generator, whose presets momem/ declares

    def __init__(self, cfg):
        super().__init__(cfg)
        self.encoder = nn.ModuleList(ResidualLayer(cfg, EncoderAttention(cfg, i)) for i in range(cfg.encoder_layers))
        self.encoder_norm = make_norm(cfg)
        if cfg.encdec_copy:
            self.copy_query = nn.Linear(cfg.dim, cfg.dim, bias=False)
            self.copy_key = nn.Linear(cfg.dim, cfg.dim, bias=False)
            self.copy_gate = nn.Linear(2 * cfg.dim, 1)
        for module in (self.encoder, *([self.copy_query, self.copy_key, self.copy_gate] if cfg.encdec_copy else [])):
            module.apply(self._init_weights)

    def make_layer(self, cfg, layer_idx):
        return DecoderLayer(cfg, layer_idx)

    @log_io
    def encode(self, source):
        """(B, S) source ids -> encoder output (B, S, dim) and key mask (B, 1, 1, S), True = real."""
        if source.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"source of {source.shape[1]} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        key_mask = (source != PAD_ID)[:, None, None, :]
        positions = torch.arange(source.shape[1], device=source.device)
        x = self.embed_tokens(source, positions)
        for layer in self.encoder:
            x = layer(x, positions, key_mask=key_mask)
        return self.encoder_norm(x), key_mask

    def example_inputs(self, batch_size):
        """A random source of up to 8 tokens per row, the last one padding in row 0."""
        length = min(8, self.cfg.max_seq_len)
        source = torch.randint(2, self.cfg.vocab_size, (batch_size, length), device=self.embed.weight.device)
        source[0, -1] = PAD_ID
        return {"source": source}

    def new_cache(self, batch_size, pad=None, source=None, **inputs):
        if source is None:
            raise ValueError("an encoder-decoder model needs source=(B, S) ids to decode from")
        return SourceCache(self, batch_size, pad, source)

    @log_io
    def copy_logits(self, h, vocab_logits, memory, key_mask, source):
        """Mix the vocabulary distribution with copying from the source; returns log p (B, T, V)."""
        scores = self.copy_query(h) @ self.copy_key(memory).transpose(1, 2) / math.sqrt(h.shape[-1])
        attention = scores.float().masked_fill(~key_mask[:, 0], float("-inf")).softmax(dim=-1)  # (B, T, S)
        context = attention.type_as(memory) @ memory
        gate = self.copy_gate(torch.cat([h, context], dim=-1)).float()  # (B, T, 1): p_gen = sigmoid(gate)
        copied = torch.zeros_like(vocab_logits, dtype=torch.float).scatter_add_(
            -1, source[:, None, :].expand(-1, h.shape[1], -1), attention)
        # log(p_gen * p_vocab + (1 - p_gen) * p_copy); the floor keeps log finite where nothing is copied
        return torch.logaddexp(F.logsigmoid(gate) + vocab_logits.float().log_softmax(dim=-1),
                               F.logsigmoid(-gate) + copied.clamp_min(1e-12).log())

    @log_io
    def forward(self, tokens, targets=None, cache=None, source=None):
        if cache is None:
            if source is None:
                raise ValueError("an encoder-decoder model needs source=(B, S) ids (the text to read)")
            memory, key_mask = self.encode(source)
            memory_kv = [layer.cross_attn.project_memory(memory) for layer in self.layers]
        else:
            source, memory, key_mask, memory_kv = cache.source, cache.memory, cache.key_mask, cache.memory_kv
        positions = self.positions_for(tokens.shape[1], tokens.device, cache)
        x = self.embed_tokens(tokens, positions)
        for layer, kv in zip(self.layers, memory_kv):
            x = layer(x, positions, cache, kv, key_mask)
        if cache is not None:
            cache.length += tokens.shape[1]
        logits = self.output_logits(x)
        if self.cfg.encdec_copy:
            logits = self.copy_logits(self.final_norm(x), logits, memory, key_mask, source)
        loss = None if targets is None else self.next_token_loss(logits, targets)
        return logits, loss, {}
