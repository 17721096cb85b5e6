"""Minutes per probe cell: one run of a capability-probe study (probes.py) timed end to end.

    python bench/probe_cell.py [--preset llama_1m] [--width 64] [--difficulty 64:4] [--lr 3e-3] [--steps 1500]

Trains the cell into a temporary folder with the study's recipe and prints the wall-clock,
tokens/s and the final accuracy. A researcher probes an idea over lunch when one cell at
width 64 takes minutes (the target: 3 on 2 CPU cores). Say which CPU it ran on.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import probes  # noqa: E402
import runs  # noqa: E402
import train  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama_1m")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--difficulty", default="64:4")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=probes.DEFAULTS["max_steps"])
    p.add_argument("--dataset", default="mqar")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (model_cfg, train_cfg, _), = probes.plan("bench", [args.preset], [args.width], [args.difficulty], [args.lr], [1],
                                                 overrides=dict(max_steps=args.steps, dataset=args.dataset),
                                                 folder=folder)
        start = time.perf_counter()
        run = train.train(model_cfg, train_cfg, progress=False)
        seconds = time.perf_counter() - start
        last = runs.read_log(run).iloc[-1]
    print(f"{args.preset} width {args.width}, {args.dataset} {args.difficulty}, lr {args.lr:g}, {args.steps} steps, "
          f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()} CPU, {torch.get_num_threads()} threads")
    print(f"  {seconds / 60:.1f} min end to end ({last['tokens_per_s']:,.0f} tokens/s), "
          f"val_acc {last['val_acc']:.3f} ± {last['val_acc_se']:.3f}")


if __name__ == "__main__":
    main()
