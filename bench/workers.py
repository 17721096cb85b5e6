"""Aggregate training tokens/s of N runs at once on one machine (study workers) against one run.

    python bench/workers.py --workers 2 [--preset llama_1m] [--steps 60] [--batch_size 8]   # 2 CPU cores
    python bench/workers.py --workers 8 --batch_size 64 --steps 150                         # one GPU

Each worker is a `train.py` process with its own run folder (runs.run_workers: on the CPU each
gets cores / N threads, on a GPU they share it), trained on the local TinyStories slice (else
the tests' fixture text). The figure is tokens trained / wall-clock, compile and evaluation
included, as a study sees it. Say which machine it ran on.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import runs  # noqa: E402

DATA = os.environ.get("MMS_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data", "tinystories")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "stories")


def train_command(out, name, data_dir, **fields):
    """The train.py command of one run folder out/name, quiet, with `fields` as config flags."""
    flags = [f"--{k}={v}" for k, v in fields.items()]
    return [sys.executable, "train.py", "--name", name, "--out_dir", out, "--data_dir", data_dir, "--no_progress",
            "--overwrite", *flags]


def aggregate_tokens_per_s(workers, folder, preset="llama_1m", steps=60, batch_size=8, data_dir=None):
    """(tokens/s of `workers` runs trained at once, their exit codes)."""
    data_dir = data_dir or (DATA if os.path.isdir(DATA) else FIXTURE)
    commands = [train_command(folder, f"worker{i}", data_dir, preset=preset, max_steps=steps, batch_size=batch_size,
                              eval_interval=steps, checkpoint_interval=steps, eval_tokens=32768)
                for i in range(workers)]
    codes, tokens_per_s = runs.run_workers(commands, lambda: [os.path.join(folder, f"worker{i}") for i in range(workers)])
    return tokens_per_s, codes


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--preset", default="llama_1m")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=8)
    args = p.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)"
    print(f"{args.preset}, {args.steps} steps of batch {args.batch_size}, {device}, torch {torch.__version__}")
    rates = {}
    for n in (1, args.workers):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            rates[n], codes = aggregate_tokens_per_s(n, folder, args.preset, args.steps, args.batch_size)
        print(f"  {n} worker(s): {rates[n]:>10,.0f} tokens/s in all ({time.perf_counter() - start:.0f} s, exit codes {codes})")
    print(f"  {args.workers} workers against 1: {rates[args.workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
