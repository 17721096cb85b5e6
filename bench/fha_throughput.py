"""Forward+backward time of Fractal-Head Attention: the vectorised module against the naive
loop reference of the tests (a Python loop over levels and sub-heads, explicit softmax, the
original's structure), at the fha_1m layout.

    python bench/fha_throughput.py [--preset fha_1m] [--batch_size 8] [--steps 10] [--bf16]

Compare the ratio printed at the end, measured in this one run.
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import presets  # noqa: E402
from modules.fractal_head_attention import FractalHeadAttention, naive_reference  # noqa: E402
from timing import median_time  # noqa: E402


def masked_single_call(attn, x):
    """The other vectorisation (reference notes B5b): every sub-head becomes a full-size head whose
    query is zero outside its channels, so one SDPA call serves all levels (F/H times the FLOPs).
    Written for the preset's 'subband' RoPE, where q and k are rotated once before the split."""
    assert not attn.per_head_rope, "masked_single_call is written for fractal_rope='subband'"
    B, T, _ = x.shape
    q, k, v = attn.project_qkv(x, torch.arange(T))  # (B, H, T, D), (B, K, T, D)
    D = attn.head_dim
    channels = torch.arange(D, dtype=torch.float).view(1, 1, D)
    qk_masks, v_masks, level_of = [], [], []
    for i, (n, d) in enumerate(attn.levels):
        qk_channels = attn.split_qk(channels, i)[0, :, 0].long()  # (n, d): q/k channels of each sub-head
        for r in range(n):
            qk_masks.append(torch.zeros(D).index_fill_(0, qk_channels[r], 1) * attn.scales[i])
            v_masks.append(torch.zeros(D).index_fill_(0, torch.arange(r * d, (r + 1) * d), 1))
            level_of.append(i)
    qk_masks, v_masks, level_of = torch.stack(qk_masks), torch.stack(v_masks), torch.tensor(level_of)
    kv_of = level_of // attn.group
    q_all = q[:, level_of] * qk_masks[None, :, None]  # (B, F, T, D), the logit scale folded in
    y = torch.nn.functional.scaled_dot_product_attention(q_all, k[:, kv_of], v[:, kv_of], is_causal=True, scale=1.0)
    out = torch.zeros(B, len(attn.levels), T, D).index_add_(1, level_of, y * v_masks[None, :, None])
    return attn.out(out.transpose(1, 2).reshape(B, T, -1))


def kernels_only(attn, batch_size, T):
    """The per-level scaled_dot_product_attention calls alone, on random inputs of the module's
    shapes: the floor under the module's time (the rest is projections, RoPE and reshapes)."""
    qkv = [[torch.randn(batch_size, n, T, d, requires_grad=True) for _ in range(3)] for n, d in attn.levels]
    return lambda _: sum(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale).sum()
                         for (q, k, v), scale in zip(qkv, attn.scales))


def time_fwd_bwd(fn, x, steps, bf16=False, warmup=2):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = fn(x)
        y.float().sum().backward()
    return median_time(step, steps, warmup)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fha_1m")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--bf16", action="store_true", help="run everything under bf16 autocast (CPU), as training does by default")
    args = p.parse_args()
    cfg, _ = presets.get_preset(args.preset)
    torch.manual_seed(0)
    attn = FractalHeadAttention(cfg, 0)
    T = cfg.max_seq_len
    x = torch.randn(args.batch_size, T, cfg.dim, requires_grad=True)
    positions = torch.arange(T)
    print(f"{args.preset}: {attn.extra_repr()}; batch {args.batch_size} x {T}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {'bf16 autocast' if args.bf16 else 'fp32'}; "
          f"median forward+backward of {args.steps}")
    with torch.no_grad():
        diff = (masked_single_call(attn, x) - attn(x, positions)).abs().max().item()
    fast = time_fwd_bwd(lambda inp: attn(inp, positions), x, args.steps, args.bf16)
    print(f"  vectorised (one SDPA per level)   {fast * 1e3:8.1f} ms   <- the module")
    floor = time_fwd_bwd(kernels_only(attn, args.batch_size, T), x, args.steps, args.bf16)
    print(f"    of which the SDPA kernels       {floor * 1e3:8.1f} ms   (the same calls on random inputs)")
    masked = time_fwd_bwd(lambda inp: masked_single_call(attn, inp), x, args.steps, args.bf16)
    print(f"  one masked SDPA call              {masked * 1e3:8.1f} ms   (max |difference| {diff:.1e})")
    slow = time_fwd_bwd(lambda inp: naive_reference(attn, cfg, inp), x, args.steps, args.bf16)
    print(f"  naive loop reference              {slow * 1e3:8.1f} ms")
    print(f"  module vs naive loop              {slow / fast:8.1f}x faster")
    print(f"  module vs one masked call         {masked / fast:8.1f}x faster")


if __name__ == "__main__":
    main()
