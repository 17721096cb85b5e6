"""The baseline language model: Llama- or GPT-2-style, chosen by ModelConfig flags.

Contract kept by every architecture (see README, "Adding an architecture"):
  model = build_model(cfg)
  logits, loss, terms = model(tokens, targets=None, cache=None, **inputs)
      tokens (B, T) int64 -> logits (B, T, vocab); loss is a scalar when targets (B, T) are
      given (targets equal to IGNORE_INDEX = -100 take no loss; the mean runs over the rest),
      else None; terms is a dict of the loss's named parts (empty here), logged as their own
      columns. The trainer calls model(**batch) with the dataset's dict batch; a model that
      needs more than tokens (an encoder's input, say) takes it as another keyword.
  cache = model.new_cache(batch_size, pad, **inputs)   incremental decoding (it may run an
      encoder once on `inputs`); logits equal the full pass
  model.no_weight_decay()                    names of parameters that take no weight decay
  model.example_inputs(batch_size)           extra keyword inputs a forward needs, made up (for
      shape traces and generic tests); {} for a language model
Declared on the class (read before a model exists): `validate_config(cfg)` (its knobs' checks),
`own_fields` (config fields only it uses), `ignored_fields` (shared fields it does not use:
setting them is an error), `presets` and `controls` (gathered by presets.py), `demo_overrides`
(presets.demo_config), the size hooks `depth_floor`, `width_fields`, `weights_lower_bound` and
`mixer_flops_per_token` (modules/sizing.py, presets.sized), and `embedding_names` (what
parameter counts call embeddings).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from config import IGNORE_INDEX
from modules.attention import Attention, KVCache, rope_frequencies
from modules.layer import ResidualLayer, make_norm
from modules.logging import LoggingModule, log_io
from modules.sizing import attention_flops_per_token, baseline_weights_lower_bound


def sinusoidal_table(max_len, dim, theta=10000.0):
    """(max_len, dim) fixed sin/cos position table (Vaswani et al.)."""
    inv_freq = rope_frequencies(dim, theta)
    angles = torch.outer(torch.arange(max_len).float(), inv_freq)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)


# How the shipped ~1M models were trained (a preset is a recipe: `python train.py --preset NAME`
# reproduces the shipped run NAME): 3,600 steps of 8 x 512 tokens at lr 1e-2, residual dropout 0.1
RECIPE_1M = dict(batch_size=8, max_steps=3600, lr=1e-2, dropout=0.1, eval_interval=200, checkpoint_interval=400)


class GPT(LoggingModule):
    """Token embedding -> num_layers residual layers -> final norm -> output head."""

    own_fields, ignored_fields, demo_overrides = (), (), {}
    weights_lower_bound = staticmethod(baseline_weights_lower_bound)
    mixer_flops_per_token = staticmethod(attention_flops_per_token)
    presets, controls = {}, {}  # name -> config overrides, and control -> the preset it is matched to
    width_fields = ()  # fields that scale with dim when a preset is resized (presets.sized)
    embedding_names = ("embed.weight", "pos_embed.weight")  # parameters counted as embeddings

    @staticmethod
    def depth_floor(cfg):
        """The fewest layers the architecture works with (presets.sized)."""
        return 2

    @staticmethod
    def validate_config(cfg):
        """The baseline has no knobs of its own beyond config.py's checks."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        if cfg.pos_encoding == "learned":
            self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.dim)
        elif cfg.pos_encoding == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.dim, cfg.rope_theta), persistent=False)
        self.layers = nn.ModuleList(self.make_layer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = make_norm(cfg)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    def make_layer(self, cfg, layer_idx):
        """One residual layer; architectures that only change the mixer or MLP override this."""
        return ResidualLayer(cfg, Attention(cfg, layer_idx))

    def _init_weights(self, module):
        std = self.cfg.init_std
        if isinstance(module, nn.Linear):
            # residual-branch outputs shrink with depth so the stream's variance stays O(1) (GPT-2)
            residual_out = getattr(module, "is_residual_out", False)
            scale = 1 / math.sqrt(2 * self.cfg.num_layers) if residual_out else 1.0
            nn.init.normal_(module.weight, std=std * scale)
            if residual_out and self.cfg.zero_init_proj:
                nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)

    def no_weight_decay(self):
        """Names of parameters without weight decay (besides all vectors, which never take it)."""
        return {"pos_embed.weight"} if self.cfg.pos_encoding == "learned" else set()

    def example_inputs(self, batch_size):
        """Made-up extra forward inputs for batch_size rows: none for a language model."""
        return {}

    def new_cache(self, batch_size, pad=None, **inputs):
        """An empty KV cache for batch_size rows; pad (B,) = left-padding slots per row."""
        p = next(self.parameters())
        return KVCache(self.cfg.num_layers, batch_size, self.cfg.num_kv_heads, self.cfg.max_seq_len,
                       self.cfg.head_dim, p.device, p.dtype, pad)

    @log_io
    def embed_tokens(self, tokens, positions):
        """(B, T) ids -> (B, T, dim)."""
        x = self.embed(tokens)
        if self.cfg.scale_embedding:
            x = x * math.sqrt(self.cfg.dim)
        if self.cfg.pos_encoding == "learned":
            x = x + self.pos_embed(positions)
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + self.pos_table[positions]
        return x

    @log_io
    def output_logits(self, x):
        """(B, T, dim) -> (B, T, vocab)."""
        x = self.final_norm(x)
        logits = self.head(x) if self.head is not None else x @ self.embed.weight.t()
        if self.cfg.logit_softcap:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        return logits

    def positions_for(self, num_new, device, cache=None):
        """Positions of num_new tokens: (T,) from 0 without a cache, else (B, T) from the cache."""
        start = 0 if cache is None else cache.length
        if (cache is None or not cache.static) and start + num_new > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + num_new} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        return torch.arange(num_new, device=device) if cache is None else cache.positions(num_new)

    @staticmethod
    def next_token_loss(logits, targets):
        """Mean cross-entropy (fp32) over the targets that are not IGNORE_INDEX."""
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    @log_io
    def forward(self, tokens, targets=None, cache=None):
        positions = self.positions_for(tokens.shape[1], tokens.device, cache)
        x = self.embed_tokens(tokens, positions)
        for layer in self.layers:
            x = layer(x, positions, cache)
        if cache is not None:
            cache.length += tokens.shape[1]
        logits = self.output_logits(x)
        loss = None if targets is None else self.next_token_loss(logits, targets)
        return logits, loss, {}
