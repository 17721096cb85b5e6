"""Evaluation metrics shared by train.py and model_comparison.py: per-window loss, standard
errors, top-k accuracy. Ignored targets are IGNORE_INDEX (-100, PyTorch's default), never the
padding id, and every average runs over counted tokens only."""
import math

import torch
import torch.nn.functional as F

from config import IGNORE_INDEX


def window_losses(logits, targets):
    """(B, T, vocab) logits and (B, T) targets -> (B,) mean next-token loss of each window, in
    nats/token, over its counted targets (a window with none counts 0)."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none", ignore_index=IGNORE_INDEX)
    counted = (targets != IGNORE_INDEX).sum(dim=1).clamp_min(1)
    return per_token.sum(dim=1) / counted


def mean_and_se(values):
    """Mean of a 1-D tensor and its standard error (nan for a single value)."""
    se = (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else float("nan")
    return values.mean().item(), se


def topk_hits(logits, targets, ks=(1, 5)):
    """{k: number of counted positions whose target is among the k highest logits}, and the
    number of counted positions. logits (..., V), targets (...)."""
    keep = targets != IGNORE_INDEX
    logits, targets = logits[keep], targets[keep]
    ranked = logits.topk(max(ks), dim=-1).indices
    hits = ranked == targets[:, None]
    return {k: int(hits[:, :k].any(dim=-1).sum()) for k in ks}, int(keep.sum())
