"""Training tokens/s of presets at batch 8 x 512 for eager fp32, bf16 autocast, compiled, and both.

    python bench/train_throughput.py [--presets llama_1m] [--steps 20] [--batch_size 8]
    python bench/train_throughput.py --presets llama_1m,mm_1m,fha_1m --modes "eager fp32,compiled + bf16"
    python bench/train_throughput.py --modes "compiled fp32 det" --optimizers adamw,muon   # Muon's extra cost
    python bench/train_throughput.py --presets llama_stories15m --batch_size 0 --modes "compiled + bf16"  # its batch

On a GPU it also prints the model FLOPs utilisation (MFU: training FLOPs per token, modules.
flops_per_token, times tokens/s, over the card's bf16 peak).

With muon among --optimizers it also times, per preset, Muon's orthogonalisation alone: torch's
own Newton-Schulz (torch.optim.Muon's, in bf16 and with the settings the trainer's Muon has) over
the matrices it holds, i.e. its seconds per training step, and one bf16 against one fp32 matmul of the
largest of those shapes (CPUs without native bf16 emulate it: that ratio is the price).

Machines here are shared and noisy: compare the ratios printed at the end (all measured in this
one run), not absolute figures across runs. Uses random tokens: data loading is not timed.
"""
import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import presets  # noqa: E402
import tools  # noqa: E402
from modules import build_model, flops_per_token  # noqa: E402
from train import make_optimizer  # noqa: E402
from timing import median_time  # noqa: E402

# mode -> (bf16 autocast, torch.compile, deterministic algorithms: what train.py sets on CPU)
MODES = {"eager fp32": (False, False, False), "bf16 autocast": (True, False, False), "compiled fp32": (False, True, False),
         "compiled + bf16": (True, True, False), "eager fp32 det": (False, False, True), "compiled fp32 det": (False, True, True),
         "compiled + bf16 det": (True, True, True)}


def measure(preset, use_autocast, use_compile, deterministic, steps, batch_size, warmup, device, optimizer="adamw"):
    torch._dynamo.reset()  # each mode compiles afresh, under its own settings
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    model_cfg, train_cfg = presets.get_preset(preset)
    batch_size = batch_size or train_cfg.batch_size
    tools.seed_everything(0)
    model = build_model(model_cfg).to(device)
    optimizer = make_optimizer(model, dataclasses.replace(train_cfg, optimizer=optimizer), device)
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

    tokens_per_s = batch_size * model_cfg.max_seq_len / median_time(step, steps, warmup)
    mfu = tools.estimate_mfu(flops_per_token(tools.count_parameters(model)[0], model_cfg), tokens_per_s, device)
    return tokens_per_s, mfu


def orthogonalisation_seconds(preset, steps, warmup):
    """(seconds of torch.optim.Muon's Newton-Schulz over all of a preset's Muon matrices, per
    step; bf16 over fp32 matmul time at the largest such shape), on the CPU-side shapes."""
    from torch.optim._muon import _zeropower_via_newtonschulz  # Muon's own; private, so benchmarks only
    model_cfg, train_cfg = presets.get_preset(preset)
    model = build_model(model_cfg)
    muon = make_optimizer(model, dataclasses.replace(train_cfg, optimizer="muon"), torch.device("cpu")).optimizers["muon"]
    settings = [muon.defaults[k] for k in ("ns_coefficients", "ns_steps", "eps")]  # what training runs
    shapes = [tuple(p.shape) for group in muon.param_groups for p in group["params"]]
    grads = [torch.randn(shape) for shape in shapes]
    ns = median_time(lambda: [_zeropower_via_newtonschulz(g, *settings) for g in grads], steps, warmup)
    rows, cols = max(shapes, key=lambda s: s[0] * s[1])
    a, b = torch.randn(min(rows, cols), max(rows, cols)), torch.randn(max(rows, cols), min(rows, cols))
    fp32 = median_time(lambda: a @ b, steps * 10, warmup)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return ns, median_time(lambda: a16 @ b16, steps * 10, warmup) / fp32, len(shapes)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="llama_1m", help="comma-separated preset names")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=8, help="0 = each preset's own batch_size")
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    p.add_argument("--optimizers", default="adamw", help="comma-separated: adamw, muon (TrainConfig.optimizer)")
    args = p.parse_args()
    device = tools.pick_device(args.device)
    names, modes = args.presets.split(","), [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit(f"error: --modes {unknown} invalid: choose from {list(MODES)}")
    print(f"batch {args.batch_size} x max_seq_len, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.steps} steps after {args.warmup} warm-up")
    optimizers = args.optimizers.split(",")
    if not set(optimizers) <= {"adamw", "muon"}:
        sys.exit(f"error: --optimizers {args.optimizers!r} invalid: choose from adamw, muon")
    results = {}
    for preset in names:
        for mode in modes:
            for opt in optimizers:
                results[preset, mode, opt], mfu = measure(preset, *MODES[mode], args.steps, args.batch_size,
                                                          args.warmup, device, opt)
                print(f"  {preset:<16} {mode:<16} {opt:<6} {results[preset, mode, opt]:>10,.0f} tokens/s"
                      + (f"  MFU {mfu:.1%}" if mfu is not None else ""), flush=True)
    if "muon" in optimizers:
        print("Muon's orthogonalisation alone (torch's bf16 Newton-Schulz, the trainer's settings, on the CPU):")
        for preset in names:
            ns, bf16_over_fp32, count = orthogonalisation_seconds(preset, args.steps, args.warmup)
            print(f"  {preset:<16} {ns * 1e3:8.1f} ms per step over {count} matrices; a bf16 matmul takes "
                  f"{bf16_over_fp32:.1f}x an fp32 one of the largest shape here")
    print("ratios (same run):")
    for (preset, mode, opt), tps in results.items():
        base = results.get((preset, "eager fp32", opt))
        first = results[names[0], mode, opt]
        line = f"  {preset:<16} {mode:<16} {opt:<6}"
        if base:
            line += f" {tps / base:5.2f}x its eager fp32"
        if len(names) > 1:
            line += f" {tps / first:5.2f}x {names[0]} ({mode})"
        if opt != optimizers[0]:
            line += f" {tps / results[preset, mode, optimizers[0]]:5.2f}x {optimizers[0]}"
        print(line)


if __name__ == "__main__":
    main()
