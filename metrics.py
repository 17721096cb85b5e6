"""Evaluation metrics shared by train.py and model_comparison.py: per-window loss, standard
errors, top-k accuracy. Ignored targets are IGNORE_INDEX (-100, PyTorch's default), never the
padding id, and every average runs over counted tokens only."""
import math

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


# --- story quality: statistics of generated text (words are whitespace-separated) ---------------
def ngrams(words, n):
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts, n):
    """Distinct-n (Li et al. 2016): unique word n-grams over all word n-grams of the texts (0 when none)."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_ngram_share(text, n=4):
    """The share of a text's word n-grams that already occurred earlier in the same text (0 when none)."""
    grams, seen, repeats = ngrams(text.split(), n), set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams) if grams else 0.0


def story_statistics(texts, ended):
    """distinct-1/2/3 over all texts, the mean share of repeated 4-grams inside a text, the mean
    length in words, and the share of texts that ended (end-of-text before the length limit)."""
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2), "distinct_3": distinct_n(texts, 3),
            "repeated_4gram": sum(map(repeated_ngram_share, texts)) / len(texts),
            "mean_words": sum(len(t.split()) for t in texts) / len(texts), "ended": sum(ended) / len(texts)}
