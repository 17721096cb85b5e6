"""Training tokens/s of a preset at batch 8 x 512 for eager fp32, bf16 autocast, compiled, and both.

    python bench/train_throughput.py [--preset llama_1m] [--steps 20] [--batch_size 8]

Machines here are shared and noisy: compare the ratios printed at the end (all measured in this
one run), not absolute figures across runs. Uses random tokens: data loading is not timed.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
import tools  # noqa: E402
from modules import build_model  # noqa: E402
from train import make_optimizer  # noqa: E402

MODES = {"eager fp32": (False, False), "bf16 autocast": (True, False), "compiled fp32": (False, True),
         "compiled + bf16": (True, True)}


def measure(preset, use_autocast, use_compile, steps, batch_size, warmup, device):
    model_cfg, train_cfg = config.get_preset(preset)
    tools.seed_everything(0)
    model = build_model(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg, device)
    step_model = torch.compile(model) if use_compile else model
    x = torch.randint(model_cfg.vocab_size, (batch_size, model_cfg.max_seq_len), device=device)
    y = torch.randint(model_cfg.vocab_size, (batch_size, model_cfg.max_seq_len), device=device)

    def step():
        with tools.autocast(device, use_autocast):
            _, loss, _ = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):  # compilation and allocator warm-up
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    return batch_size * model_cfg.max_seq_len / median


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama_1m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    args = p.parse_args()
    device = tools.pick_device(args.device)
    print(f"{args.preset}, batch {args.batch_size} x seq, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.steps} steps")
    results = {}
    for mode in args.modes.split(","):
        results[mode] = measure(args.preset, *MODES[mode], args.steps, args.batch_size, args.warmup, device)
        print(f"  {mode:<16} {results[mode]:>10,.0f} tokens/s")
    base = results.get("eager fp32")
    if base:
        for mode, tps in results.items():
            print(f"  {mode:<16} {tps / base:>6.2f}x eager fp32")


if __name__ == "__main__":
    main()
