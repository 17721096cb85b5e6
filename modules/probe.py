"""A look inside a model: what each head attends to (or how a mixer without attention mixes
positions), each head's decay rate, a multi-scale model's predicted future against the true one. For notebooks (inference.ipynb
calls these); nothing here is on a training path.

    maps = attention_maps(model, tokens)            # every attention-like call, weights explicit
    plot_attention(maps, labels)                    # heat maps, one per call and head
    plot_decays(decays(model))                      # per layer and head, where the architecture forgets at a rate
    plot_future_agreement(model.future_agreement(tokens))  # FutureFormer's predicted against true futures

The fast code never materialises attention weights (scaled_dot_product_attention fuses them
away), so `record_attention` watches every call of it while the model runs and recomputes the
weights of that call explicitly: ordinary and grouped-query attention, each FHA level (its
sub-heads are the heads of that call), retrieval over an associative memory (query t+1 over keys
<= t), memory slots (over slots, not positions) and cross-attention. A mixer without softmax
attention (a state-space mixer, say) draws its own map: a module with `mixing_map(x) -> (B, heads, T, T)` rows
summing to 1 is recorded after each of its calls.
"""
import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMap:
    module: str            # the submodule that made the call, e.g. "layers.0.mixer"
    call: int              # its n-th call in this forward (FHA: the level)
    weights: torch.Tensor  # (B, heads, T_query, T_key), rows sum to 1
    causal: bool           # a causal self-attention map (no weight above the diagonal)


def explicit_weights(q, k, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, **_):
    """The softmax weights scaled_dot_product_attention would use for these arguments, (B, H, Tq, Tk)."""
    if k.shape[-3] != q.shape[-3]:  # grouped-query: each key head serves several query heads
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scores = (q.float() @ k.float().transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if is_causal:
        scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return scores.softmax(dim=-1)


@contextlib.contextmanager
def record_attention(model):
    """Yields a list that fills with an AttentionMap for every scaled_dot_product_attention call
    the model's modules make inside the block."""
    maps, stack, counts = [], [], {}
    names = {m: n for n, m in model.named_modules()}
    def enter(mod, args):
        stack.append(names[mod])

    def leave(mod, args, out):  # returns None: the module's output stays as it is
        stack.pop()

    def explicit_mixing(mod, args, out):  # a mixer that is no softmax attention draws its own map
        maps.append(AttentionMap(names[mod], 0, mod.mixing_map(args[0]).detach().float().cpu(), True))
    hooks = [m.register_forward_pre_hook(enter) for m in names] + [m.register_forward_hook(leave) for m in names]
    hooks += [m.register_forward_hook(explicit_mixing) for m in names if hasattr(m, "mixing_map")]
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        name = stack[-1] if stack else ""
        counts[name] = counts.get(name, -1) + 1
        causal = q.shape[-2] == k.shape[-2] and (is_causal if attn_mask is None else not (
            attn_mask.expand(*attn_mask.shape[:-2], q.shape[-2], k.shape[-2]).triu(1).any()))  # nothing above the diagonal
        maps.append(AttentionMap(name, counts[name], explicit_weights(q, k, attn_mask, is_causal, scale,
                                                                       **kwargs).detach().cpu(), causal))
        return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs)
    F.scaled_dot_product_attention = spy
    try:
        yield maps
    finally:
        F.scaled_dot_product_attention = original
        for h in hooks:
            h.remove()


@torch.no_grad()
def attention_maps(model, tokens, **inputs):
    """Every attention-like map of one forward pass over tokens (B, T) (eval mode)."""
    was_training = model.training
    model.eval()
    with record_attention(model) as maps:
        model(tokens, **inputs)
    model.train(was_training)
    return maps


def decays(model):
    """(layers, heads) decay rate of each head's memory, for architectures that forget at a
    learned rate (Memory Mosaics' leaky keys, a state-space mixer's A): model.decays()."""
    if not hasattr(model, "decays"):
        raise ValueError(f"model={type(model).__name__} is invalid here: it has no per-head decay rates "
                         "(its class defines no decays() method)")
    return model.decays()


# --- plots -------------------------------------------------------------------------------------
def plot_attention(maps, labels=None, row=0, max_heads=8):
    """Heat maps of batch row `row`: one line of panels per call (layer, FHA level, memory), one
    panel per head; `labels` (the tokens as text) name the axes of short sequences."""
    import matplotlib.pyplot as plt
    heads = max(min(m.weights.shape[1], max_heads) for m in maps)
    fig, axes = plt.subplots(len(maps), heads, figsize=(2.3 * heads, 2.3 * len(maps)), squeeze=False)
    for axes_row, m in zip(axes, maps):
        for h, ax in enumerate(axes_row):
            if h >= min(m.weights.shape[1], max_heads):
                ax.axis("off")
                continue
            ax.imshow(m.weights[row, h], cmap="viridis", vmin=0, vmax=1, aspect="auto")
            ax.set_title(f"{m.module}#{m.call} h{h}", fontsize=7)
            small = labels is not None and len(labels) <= 24
            ax.set_xticks(range(len(labels)) if small and m.weights.shape[-1] == len(labels) else [])
            ax.set_yticks([])
            if small and m.weights.shape[-1] == len(labels):
                ax.set_xticklabels(labels, rotation=90, fontsize=6)
    fig.suptitle("attention weights: row = query position, column = key position (or slot)")
    fig.tight_layout()
    return fig


def plot_decays(decays):
    """Decay rate beta per layer (rows) and head (columns): weight exp(-beta * lag) on the past."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.2 * decays.shape[1] + 2, 0.6 * decays.shape[0] + 1.5))
    image = ax.imshow(decays, cmap="magma")
    ax.set(xlabel="head", ylabel="layer", title="decay rate beta (memory span ~ 1/beta tokens)")
    ax.set_xticks(range(decays.shape[1]))
    ax.set_yticks(range(decays.shape[0]))
    for i in range(decays.shape[0]):
        for j in range(decays.shape[1]):
            ax.text(j, i, f"{float(decays[i, j]):.2f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax)
    return fig


def plot_future_agreement(agreement):
    """FutureFormer: cosine(predicted, true future summary) along the sequence, one line per scale."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, cosine in agreement.items():
        ax.plot(cosine.cpu(), label=name)
    ax.set(xlabel="position t", ylabel="cosine similarity", title="predicted vs true future summary, per scale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
