"""Memory Mosaics' leaky average: the chunked form used by the module against the dense T x T
decay matrix of the reference code, forward + backward, at mm_1m's shape (batch 8 x 512).

    python bench/mm_leaky_average.py [--batch_size 8] [--steps 10]

Compare the ratio printed at the end, measured in this one run.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import presets  # noqa: E402
from modules.memory_mosaics import leaky_average  # noqa: E402
from timing import median_time  # noqa: E402


def dense_leaky_average(x, beta):
    """The reference form: an (nh, T, T) matrix exp(-beta (t - s)), lower triangle, times x."""
    T = x.shape[2]
    lag = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    weights = torch.exp(-beta[:, None, None] * lag.clamp_min(0)) * (lag >= 0)
    return weights[None] @ x


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    cfg, _ = presets.get_preset("mm_1m")
    x = torch.randn(args.batch_size, cfg.num_q_heads, cfg.max_seq_len, cfg.head_dim, requires_grad=True)
    beta = torch.linspace(0.5, 5.0, cfg.num_q_heads).requires_grad_(True)
    diff = (leaky_average(x, beta) - dense_leaky_average(x, beta)).abs().max().item()
    print(f"mm_1m shape: x {tuple(x.shape)}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"max |chunked - dense| = {diff:.1e}")
    results = {}
    for chunk in (16, 32, 64, 128):
        results[f"chunked ({chunk})"] = median_time(lambda: leaky_average(x, beta, chunk=chunk).sum().backward(), args.steps)
    results["dense T x T"] = median_time(lambda: dense_leaky_average(x, beta).sum().backward(), args.steps)
    for name, t in results.items():
        print(f"  {name:<14} {t * 1e3:8.2f} ms   {results['dense T x T'] / t:5.1f}x dense")


if __name__ == "__main__":
    main()
