"""Forward+backward time of Fractal-Head Attention: the vectorised module against the naive
loop reference of the tests (a Python loop over levels and sub-heads, explicit softmax, the
original's structure), at the fha_1m layout.

    python bench/fha_throughput.py [--preset fha_1m] [--batch_size 8] [--steps 10]

Compare the ratio printed at the end, measured in this one run.
"""
import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]
import config  # noqa: E402
from modules.fractal_head_attention import FractalHeadAttention  # noqa: E402
from test_fractal_head_attention import naive_reference  # noqa: E402


def masked_single_call(attn, cfg, x):
    """The other vectorisation (reference notes B5b): every sub-head becomes a full-size head whose
    query is zero outside its slice, so one SDPA call serves all levels (F/H times the FLOPs)."""
    B, T, _ = x.shape
    q, k, v = attn.project_qkv(x, torch.arange(T))  # (B, H, T, D), (B, K, T, D)
    D = cfg.head_dim
    masks, level_of = [], []
    for i, (n, d) in enumerate(attn.levels):
        for r in range(n):
            m = torch.zeros(D)
            m[r * d:(r + 1) * d] = 1
            masks.append(m)
            level_of.append(i)
    masks = torch.stack(masks)  # (F, D)
    level_of = torch.tensor(level_of)
    positions = torch.arange(T)
    # rotate each level's q and k as the module does, then place every sub-head in its slot
    q_rot, k_rot = [], []
    for i, (n, d) in enumerate(attn.levels):
        qi = attn._rope(q[:, i].reshape(B, T, n, d).transpose(1, 2), i, positions).transpose(1, 2).reshape(B, T, D)
        ki = attn._rope(k[:, i // attn.group].reshape(B, T, n, d).transpose(1, 2), i, positions)
        q_rot.append(qi)
        k_rot.append(ki.transpose(1, 2).reshape(B, T, D))
    q_all = torch.stack(q_rot, 1)[:, level_of] * masks[None, :, None]  # (B, F, T, D)
    k_all = torch.stack(k_rot, 1)[:, level_of]
    v_all = v[:, level_of // attn.group]
    scale = attn.scales[0] if cfg.fractal_scale == "full" else None
    y = torch.nn.functional.scaled_dot_product_attention(q_all, k_all, v_all, is_causal=True, scale=scale)
    y = y * masks[None, :, None]
    out = torch.zeros(B, len(attn.levels), T, D).index_add_(1, level_of, y)  # sum sub-heads into their slot
    return attn.out(out.transpose(1, 2).reshape(B, T, -1))


def time_fwd_bwd(fn, x, steps, warmup=2):
    for _ in range(warmup):
        fn(x).sum().backward()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn(x).sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fha_1m")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    cfg, _ = config.get_preset(args.preset)
    torch.manual_seed(0)
    attn = FractalHeadAttention(cfg, 0)
    T = cfg.max_seq_len
    x = torch.randn(args.batch_size, T, cfg.dim, requires_grad=True)
    positions = torch.arange(T)
    print(f"{args.preset}: {attn.extra_repr()}; batch {args.batch_size} x {T}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median forward+backward of {args.steps}")
    with torch.no_grad():
        diff = (masked_single_call(attn, cfg, x) - attn(x, positions)).abs().max().item()
    fast = time_fwd_bwd(lambda inp: attn(inp, positions), x, args.steps)
    print(f"  vectorised (one SDPA per level)   {fast * 1e3:8.1f} ms   <- the module")
    masked = time_fwd_bwd(lambda inp: masked_single_call(attn, cfg, inp), x, args.steps)
    print(f"  one masked SDPA call              {masked * 1e3:8.1f} ms   (max |difference| {diff:.1e})")
    slow = time_fwd_bwd(lambda inp: naive_reference(attn, cfg, inp), x, args.steps)
    print(f"  naive loop reference              {slow * 1e3:8.1f} ms")
    print(f"  module vs naive loop              {slow / fast:8.1f}x faster")
    print(f"  module vs one masked call         {masked / fast:8.1f}x faster")


if __name__ == "__main__":
    main()
