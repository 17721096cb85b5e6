"""One command that proves the GPU path and writes what it measured to a markdown report.

    python bench/gpu_check.py --out comparison/gpu_check     # about 8 minutes on one H100

On a CUDA machine, in this order (each step's command, seconds and output go to report.md):
  1. the tests of the CUDA code paths (`pytest -m cuda`: compiled static decode equals eager
     decode, bf16 autocast with fused AdamW and with Muon, a save and resume bit-identical);
  2. training tokens/s and MFU: llama_1m at batch 64, llama_stories15m at its preset batch;
  3. decoding tokens/s at 512 tokens of context, trained/llama_1m's KV cache against
     trained/mamba2_1m's recurrent state (eager and compiled step), batch 1 and 8;
  4. llama_stories15m trained for about 2 minutes on the local TinyStories slice (loss_curve.png);
  5. 8 llama_1m runs at once on the one GPU against one alone (aggregate tokens/s).
Without CUDA it says so in one line, trains a tiny model for a few steps on the CPU as a smoke
test, writes the report and exits 0 (CI runs it that way). Any check that fails makes it exit 1.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import runs  # noqa: E402
from workers import DATA, FIXTURE, aggregate_tokens_per_s, train_command  # noqa: E402  (bench/workers.py)

FAILED = []  # titles of the checks that did not exit 0


def step(report, title, command, timeout):
    """Run one check, append its command, seconds, exit code and output tail to the report."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, output = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
        output = output.decode() if isinstance(output, bytes) else output
    seconds = time.perf_counter() - start
    tail = "\n".join(output.strip().splitlines()[-25:])
    report.append(f"## {title}\n\n`{' '.join(command)}` — {seconds:.0f} s, exit {code}\n\n```\n{tail}\n```\n")
    if code != 0:
        FAILED.append(title)
    print(f"{title}: exit {code} in {seconds:.0f} s", flush=True)
    return code, output


def plot_loss(run_dir, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    log = runs.read_log(run_dir)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(log["tokens"], log["val_loss"], marker="o")
    ax.set(xlabel="tokens", ylabel="validation loss (nats/token)", title=os.path.basename(run_dir))
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def gpu_checks(report, out):
    py = sys.executable
    step(report, "1. tests of the CUDA code paths", [py, "-m", "pytest", "-q", "-m", "cuda", "tests"], 150)
    step(report, "2a. training llama_1m, batch 64", [py, "bench/train_throughput.py", "--presets", "llama_1m",
         "--batch_size", "64", "--modes", "compiled + bf16", "--steps", "20"], 90)
    _, text = step(report, "2b. training llama_stories15m, preset batch", [py, "bench/train_throughput.py", "--presets",
                   "llama_stories15m", "--batch_size", "0", "--modes", "compiled + bf16", "--steps", "10"], 120)
    for batch in (1, 8):
        step(report, f"3. decoding trained/llama_1m and trained/mamba2_1m at 512 tokens of context, batch {batch}",
             [py, "bench/generate_throughput.py", "--model", "trained/llama_1m", "trained/mamba2_1m", "--batch_size",
              str(batch), "--prompt_tokens", "255", "--new_tokens", "256", "--no_recompute"], 150)
    # about 2 minutes of training at the throughput step 2b measured (128 x 256 tokens a step)
    found = re.search(r"([\d,]+) tokens/s", text)
    steps = max(50, int(120 * int(found.group(1).replace(",", "")) / (128 * 256))) if found else 1000
    data_dir = DATA if os.path.isdir(DATA) else FIXTURE
    runs_dir = os.path.join(out, "runs")
    step(report, f"4. llama_stories15m for {steps} steps on {os.path.basename(data_dir)}", train_command(
        runs_dir, "stories15m", data_dir, preset="llama_stories15m", max_steps=steps, eval_interval=max(10, steps // 8),
        checkpoint_interval=steps, eval_tokens=131072), 240)
    if os.path.isfile(os.path.join(runs_dir, "stories15m", "log_data.csv")):
        plot_loss(os.path.join(runs_dir, "stories15m"), os.path.join(out, "loss_curve.png"))
        report.append("![loss curve](loss_curve.png)\n")
    rates = {}
    for workers in (1, 8):
        start = time.perf_counter()
        rates[workers], codes = aggregate_tokens_per_s(workers, os.path.join(runs_dir, f"workers{workers}"),
                                                       steps=150, batch_size=64, data_dir=data_dir)
        report.append(f"## 5. {workers} llama_1m run(s) at once on one GPU\n\n{rates[workers]:,.0f} tokens/s in all "
                      f"(compile and evaluation included), {time.perf_counter() - start:.0f} s, exit codes {codes}\n")
        if any(codes):
            FAILED.append(f"{workers} workers")
    report.append(f"8 workers against 1: **{rates[8] / max(rates[1], 1e-9):.1f}x** the aggregate tokens/s\n")


def cpu_smoke(report, out):
    print("no CUDA device here: the GPU checks are skipped; a CPU smoke run instead")
    report.append("No CUDA device on this machine: the GPU checks were skipped. A CPU smoke run instead.\n")
    step(report, "CPU smoke: tiny for 20 steps", train_command(
        os.path.join(out, "runs"), "smoke", FIXTURE, preset="tiny", max_steps=20, eval_interval=10,
        checkpoint_interval=20, eval_tokens=2048, batch_size=8, device="cpu", compile="off", autocast="off"), 300)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for report.md, loss_curve.png and the check's run folders")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    report = [f"# GPU check\n\n{device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"]
    (gpu_checks if cuda else cpu_smoke)(report, os.path.abspath(args.out))
    with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report))
    print(f"report: {os.path.join(args.out, 'report.md')}" + (f"; failed: {', '.join(FAILED)}" if FAILED else ""))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
