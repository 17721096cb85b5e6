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
    fast = time_fwd_bwd(lambda inp: attn(inp, positions), x, args.steps)
    print(f"  vectorised (one SDPA per level)   {fast * 1e3:8.1f} ms")
    slow = time_fwd_bwd(lambda inp: naive_reference(attn, cfg, inp), x, args.steps)
    print(f"  naive loop reference              {slow * 1e3:8.1f} ms")
    print(f"  speed-up                          {slow / fast:8.1f}x")


if __name__ == "__main__":
    main()
