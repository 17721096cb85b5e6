"""FutureFormer: besides the next token, predict the future at coarser and coarser scales, and
let later layers read those predictions.

With p = ff_scales and m = ff_mult, scale c = 1..p summarises a chunk of m^c future tokens.
For the input at position t (whose next-token target is y[t] = b[t+1]):

    disjoint (default)  chunk c = y[t+s_c : t+s_c+m^c], s_c = 1 + m + ... + m^(c-1)
                        m=2: b[t+2..t+3], b[t+4..t+7], b[t+8..t+15]
    nested              chunk c = y[t+1 : t+1+m^c]   (the original code's windows)

Layers: the farthest scale is predicted from the residual stream after layer L-1-p, each
following layer predicts one scale nearer, and the last layer does next-token prediction.
Before each layer after the first prediction, a read-in adds what the model *itself* predicted
at the same position (never the true future): a gated linear map when it has one prediction,
else attention over its S predictions plus a learned scale embedding. Read-in outputs start at
zero, so a fresh model computes exactly the baseline GPT's logits.

Targets enter only the loss: each prediction is scored against its chunk (ff_target: a pooled
embedding of the chunk's tokens, detached, or the bag of its tokens) with ff_loss, weighted
lambda^c (ff_lambda; 0 = plain next-token training: the loss is then exactly the next-token
cross-entropy). Chunks that run past the window's end use their remaining tokens; positions
with none are left out. Every prediction depends on tokens <= t only, so the ordinary KV cache
is all decoding needs.

forward returns (logits, loss, terms): terms holds 'ntp' (the next-token cross-entropy) and
one 'future_A_B' per scale (its loss; A..B = the chunk's offsets from t), so each is logged.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.layer import make_norm
from modules.logging import LoggingModule, log_io
from config import IGNORE_INDEX
from modules.model import GPT, RECIPE_1M

BAG_LOSSES = ("bag_ce", "bce")


def chunk_spans(cfg):
    """[(start, size)] per scale c = 1..p, nearest first: chunk c of position t is
    targets[t + start : t + start + size] (start is 0-based in the targets, so 1 = b[t+2])."""
    m, spans = cfg.ff_mult, []
    for c in range(1, cfg.ff_scales + 1):
        start = sum(m ** j for j in range(c)) if cfg.ff_window == "disjoint" else 1
        spans.append((start, m ** c))
    return spans


def future_chunks(targets, start, size):
    """targets (B, T) -> (B, T, size) ids of each position's chunk, IGNORE_INDEX past the end."""
    padded = F.pad(targets, (0, start + size), value=IGNORE_INDEX)
    return padded[:, start:].unfold(1, size, 1)[:, :targets.shape[1]]


def validate_config(cfg):
    """Clear errors for FutureFormer settings that cannot work (called where a config enters)."""
    p, m = cfg.ff_scales, cfg.ff_mult
    if not isinstance(p, int) or not 1 <= p <= cfg.num_layers - 1:
        raise ValueError(f"ff_scales={p!r} is invalid: must be an integer in [1, num_layers - 1 = "
                         f"{cfg.num_layers - 1}] (the farthest scale is predicted after layer L-1-p)")
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"ff_mult={m!r} is invalid: must be an integer >= 1")
    if (cfg.ff_target == "bag") != (cfg.ff_loss in BAG_LOSSES):
        raise ValueError(f"ff_loss={cfg.ff_loss!r} does not fit ff_target={cfg.ff_target!r}: bag_ce and bce "
                         "score the bag of tokens (ff_target='bag'); cos, mse and mae score a pooled embedding")
    if not (isinstance(cfg.ff_lambda, (int, float)) and math.isfinite(cfg.ff_lambda) and cfg.ff_lambda >= 0):
        raise ValueError(f"ff_lambda={cfg.ff_lambda!r} is invalid: must be a finite number >= 0 (0 = next-token only)")
    start, size = chunk_spans(cfg)[-1]
    if start + size > cfg.max_seq_len:
        raise ValueError(f"ff_scales={p}, ff_mult={m} look {start + size} tokens ahead, more than "
                         f"max_seq_len={cfg.max_seq_len}")


class FutureReadIn(LoggingModule):
    """Adds a position's own future predictions to its residual stream: x (B, T, dim) and S
    predictions (B, T, dim) -> (B, T, dim). S = 1: sigmoid(gate(x)) * value(pred). S > 1:
    attention of x over its S predictions (each plus a learned scale tag; query and key of
    width dim/4), then value(mixture): the value map is linear, so it runs once, not S times.
    The value map starts at zero, so the read-in adds nothing until it has learned to."""

    def __init__(self, cfg, num_predictions):
        super().__init__()
        dim, std = cfg.dim, cfg.init_std
        self.x_norm, self.pred_norm = make_norm(cfg), make_norm(cfg)
        if num_predictions == 1:
            self.gate = nn.Linear(dim, dim, bias=False)
        else:
            self.scale_tags = nn.Parameter(torch.randn(num_predictions, dim) * std)
            key_dim = max(1, dim // 4)
            self.query, self.key = nn.Linear(dim, key_dim, bias=False), nn.Linear(dim, key_dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        for linear in (m for m in self.modules() if isinstance(m, nn.Linear)):
            nn.init.normal_(linear.weight, std=std)
        nn.init.zeros_(self.value.weight)
        self.dropout = nn.Dropout(cfg.dropout)

    @log_io
    def forward(self, x, predictions):
        x = self.x_norm(x)
        if len(predictions) == 1:
            return self.dropout(torch.sigmoid(self.gate(x)) * self.value(self.pred_norm(predictions[0])))
        preds = self.pred_norm(torch.stack(predictions, dim=2)) + self.scale_tags  # (B, T, S, dim)
        q = self.query(x)[:, :, None]  # (B, T, 1, key_dim)
        weights = ((q * self.key(preds)).sum(dim=-1) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B, T, S)
        return self.dropout(self.value((weights[..., None] * preds).sum(dim=2)))


class FutureHead(LoggingModule):
    """(B, T, dim) residual stream -> (B, T, dim) predicted summary of one future chunk."""

    def __init__(self, cfg):
        super().__init__()
        self.norm, self.proj = make_norm(cfg), nn.Linear(cfg.dim, cfg.dim, bias=False)

    @log_io
    def forward(self, x):
        return self.proj(self.norm(x))


class FutureFormer(GPT):
    """The baseline GPT trunk plus per-scale future heads and read-ins (module docstring)."""

    validate_config = staticmethod(validate_config)
    own_fields = ("ff_scales", "ff_mult", "ff_window", "ff_target", "ff_loss", "ff_lambda")
    demo_overrides = {"ff_scales": 1}
    # on llama_1m's trunk: chunks t+4..t+7 predicted after layer 1, t+2..t+3 after layer 2
    _ff_1m = dict(model_type="ff", dim=128, num_layers=4, num_q_heads=2, num_kv_heads=1, head_dim=64,
                  mlp_activation="silu", mlp_gated=True, mlp_hidden_mult=4.0, norm_type="rmsnorm", pos_encoding="rope",
                  rope_theta=10000.0, tie_embeddings=True, tokenizer="bpe2048", max_seq_len=512,
                  ff_scales=2, ff_mult=2, ff_window="disjoint", ff_target="mean", ff_loss="cos", ff_lambda=0.5,
                  **RECIPE_1M)
    presets = {
        "ff_1m": _ff_1m,
        # its control: the same model and parameters, trained on the next-token loss alone (lambda 0)
        "ff_1m_control": dict(_ff_1m, ff_lambda=0.0),
    }
    controls = {"ff_1m_control": "ff_1m"}

    @staticmethod
    def depth_floor(cfg):
        """A layer per future scale, plus the next-token layer."""
        return cfg.ff_scales + 1

    def __init__(self, cfg):
        super().__init__(cfg)
        p, L = cfg.ff_scales, cfg.num_layers
        self.first_head_layer = L - 1 - p
        # head j runs after layer L-1-p+j and predicts scale c = p - j (farthest first); read-in j
        # runs before layer L-p+j and reads the j + 1 predictions made so far
        self.scales = list(range(p, 0, -1))
        self.spans = chunk_spans(cfg)[::-1]
        self.heads = nn.ModuleList(FutureHead(cfg) for _ in range(p))
        self.read_ins = nn.ModuleList(FutureReadIn(cfg, j + 1) for j in range(p))
        for head in self.heads:
            self._init_weights(head.proj)
        self.target_proj = nn.Linear(cfg.dim, cfg.dim, bias=False) if cfg.ff_target == "linear" else None
        if self.target_proj is not None:
            self._init_weights(self.target_proj)

    def no_weight_decay(self):
        return super().no_weight_decay() | {f"read_ins.{j}.scale_tags" for j in range(1, self.cfg.ff_scales)}

    @torch.no_grad()
    def future_agreement(self, tokens):
        """For modules.probe: {term: (T,) cosine similarity} between each scale's predicted summary and the
        true pooled embedding of that future chunk, averaged over the batch (pooled targets only)."""
        predictions = []

        def keep(mod, args, out):
            predictions.append(out.float())
        hooks = [head.register_forward_hook(keep) for head in self.heads]
        was_training = self.training
        self.eval()
        try:
            self(tokens[:, :-1])
        finally:
            self.train(was_training)
            for h in hooks:
                h.remove()
        targets = tokens[:, 1:]
        out = {}
        for name, (start, size), prediction in zip(self.term_names(), self.spans, predictions):
            target, has_any = self.pooled_target(targets, start, size)
            cosine = F.cosine_similarity(prediction, target.float(), dim=-1).masked_fill(~has_any, float("nan"))
            out[name] = cosine.nanmean(dim=0)
        return out

    def term_names(self):
        """Names of the per-scale terms, farthest first (offsets counted from the input position t)."""
        return [f"future_{start + 1}_{start + size}" for start, size in self.spans]

    @log_io
    def forward(self, tokens, targets=None, cache=None):
        positions = self.positions_for(tokens.shape[1], tokens.device, cache)
        x = self.embed_tokens(tokens, positions)
        predictions = []
        for i, layer in enumerate(self.layers):
            if predictions:
                x = x + self.read_ins[i - self.first_head_layer - 1](x, predictions)
            x = layer(x, positions, cache)
            if self.first_head_layer <= i < self.cfg.num_layers - 1:
                predictions.append(self.heads[i - self.first_head_layer](x))
        if cache is not None:
            cache.length += tokens.shape[1]
        logits = self.output_logits(x)  # the last "prediction" is the next-token stream itself
        if targets is None:
            return logits, None, {}
        ntp = self.next_token_loss(logits, targets)
        loss, terms = ntp, {"ntp": ntp.detach()}
        for name, scale, (start, size), prediction in zip(self.term_names(), self.scales, self.spans, predictions):
            future = self.future_loss(prediction, targets, start, size)
            terms[name] = future.detach()
            if self.cfg.ff_lambda != 0:  # lambda = 0: exactly the next-token loss
                loss = loss + self.cfg.ff_lambda ** scale * future
        return logits, loss, terms

    def pooled_target(self, targets, start, size):
        """Each position's chunk targets[t+start : t+start+size] pooled over its counted ids'
        embeddings (detached: the target must not move toward the prediction), (B, T, dim),
        and (B, T) bool: the chunk holds any. Sums come from a running sum along T, so a chunk
        costs the same at any size."""
        valid = targets != IGNORE_INDEX
        emb = self.embed.weight.detach()[targets.clamp_min(0)] * valid[..., None]  # (B, T, dim)
        if self.cfg.ff_target == "norm":
            emb = F.normalize(emb, dim=-1)
        B, T, dim = emb.shape
        count = future_chunks(valid.long(), start, size).clamp_min(0).sum(dim=-1)  # (B, T)
        if self.cfg.ff_target == "max":
            padded = F.pad(emb.masked_fill(~valid[..., None], float("-inf")), (0, 0, 0, start + size),
                           value=float("-inf"))
            pooled = padded[:, start:].unfold(1, size, 1)[:, :T].amax(dim=-1)  # (B, T, dim)
            pooled = pooled.masked_fill((count == 0)[..., None], 0.0)
        else:
            running = F.pad(emb.float().cumsum(dim=1), (0, 0, 1, start + size))  # running[i] = sum of emb[:i]
            running[:, T + 1:] = running[:, T:T + 1]  # past the end nothing more is added
            ends = torch.arange(T, device=emb.device) + start + size
            pooled = running[:, ends] - running[:, ends - size]
            if self.cfg.ff_target != "sum":
                pooled = pooled / count.clamp_min(1)[..., None]
        if self.target_proj is not None:
            pooled = self.target_proj(pooled)
        return pooled, count > 0

    def future_loss(self, prediction, targets, start, size):
        """Mean loss of one scale over the positions whose chunk targets[t+start : t+start+size]
        holds any counted token."""
        prediction = prediction.float()
        kind = self.cfg.ff_loss
        if kind in BAG_LOSSES:
            chunk = future_chunks(targets, start, size)
            valid = chunk != IGNORE_INDEX
            logits = self.output_logits(prediction).float()  # the shared unembedding
            if kind == "bag_ce":  # softmax multi-label CE: mean over the chunk's counted tokens
                logp = logits.log_softmax(dim=-1).gather(-1, chunk.clamp_min(0))
                return -(logp * valid).sum() / valid.sum().clamp_min(1)
            multi_hot = torch.zeros_like(logits).scatter_(-1, chunk.clamp_min(0), valid.float())
            per_position = F.binary_cross_entropy_with_logits(logits, multi_hot, reduction="none").mean(dim=-1)
            has_any = valid.any(dim=-1)
        else:
            target, has_any = self.pooled_target(targets, start, size)
            target = target.float()
            if kind == "cos":
                per_position = 1 - F.cosine_similarity(prediction, target, dim=-1)
            elif kind == "mse":
                per_position = (prediction - target).pow(2).mean(dim=-1)
            else:
                per_position = (prediction - target).abs().mean(dim=-1)
        return (per_position * has_any).sum() / has_any.sum().clamp_min(1)
