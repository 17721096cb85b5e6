"""Generation speed: the decoding cache (KV cache or recurrent state), the same cache with the
compiled decode step, and full recomputation; prompt (prefill) and per-token decoding apart.

    python bench/generate_throughput.py [--model trained/llama_1m] [--new_tokens 256] [--batch_size 1]
    python bench/generate_throughput.py --model trained/llama_1m trained/mamba2_1m --prompt_tokens 255 \
        --new_tokens 256 --no_recompute   # decode up to a full 512 context, two models in one run

Without the cache every new token recomputes the whole sequence (the original template's way).
"decode" counts the tokens after the first one over the time after it (the prompt's forward is
"prompt ms"), so models with different prompt costs compare on decoding alone. With several
models, every repeat runs each of them in turn (drift of a shared machine hits all alike) and
the best repeat counts. The compiled step is timed after a warm-up generation; its one-off
compile time is printed apart. Compare the ratios printed, measured in this one run.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import inference  # noqa: E402


def measure(model, tokenizer, prompts, new_tokens, **mode):
    """(all tokens/s, decode tokens/s after the first token, prompt-and-first-token ms) of one generation."""
    first = []
    start = time.perf_counter()
    out = inference.generate(model, tokenizer, prompts, max_new_tokens=new_tokens, stop_at_eot=False, seed=0,
                             return_ids=True, on_token=lambda step, ids: step or first.append(time.perf_counter()),
                             **mode)
    end = time.perf_counter()
    rows, steps = out.shape
    return out.numel() / (end - start), rows * (steps - 1) / (end - first[0]), 1e3 * (first[0] - start)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=[inference.DEFAULT_MODEL], help="one or more run folders")
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--prompt_tokens", type=int, default=0, help="a prompt of about this many tokens (story text; "
                   "default: 'Once upon a time'), so decoding runs at a longer context")
    p.add_argument("--no_recompute", action="store_true", help="skip full recomputation (slow at long contexts)")
    args = p.parse_args()
    if args.new_tokens < 2:
        p.error(f"--new_tokens={args.new_tokens} is invalid: decoding is timed after the first new token, so give 2 or more")
    modes = {"cache": {}, "cache + compiled step": {"compile": True}}
    if not args.no_recompute:
        modes["full recomputation"] = {"use_cache": False}
    runs = {}
    for path in args.model:
        model, tokenizer, cfg = inference.load_model(path, args.device)
        prompt = "Once upon a time"
        if args.prompt_tokens:
            words = ("Once upon a time there was a little girl named Lily. She liked to play in the park with her "
                     "dog. " * args.prompt_tokens).split(" ")
            while len(tokenizer.encode(prompt).ids) < args.prompt_tokens - 1:  # the story's <|endoftext|> comes first
                prompt = " ".join(words[:len(prompt.split(" ")) + 1])
        prompts = [prompt] * args.batch_size
        cache = model.new_cache(args.batch_size)
        print(f"{path}: prompt of {len(tokenizer.encode(prompt).ids) + 1} tokens, {args.new_tokens} new tokens, "
              f"batch {args.batch_size}, {next(model.parameters()).device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; {type(cache).__name__} of {cache.nbytes() / 2**10:,.0f} KiB "
              f"(at max_seq_len={cfg.max_seq_len})")
        start = time.perf_counter()
        measure(model, tokenizer, prompts, 8, compile=True)
        print(f"  compiling the decode step took {time.perf_counter() - start:.1f} s (once per model and batch size)")
        runs[path] = (model, tokenizer, prompts)
    best = {(path, mode): (0.0, 0.0, float("inf")) for path in runs for mode in modes}
    for _ in range(args.repeats):
        for mode, options in modes.items():
            for path, (model, tokenizer, prompts) in runs.items():
                total, decode, prompt_ms = measure(model, tokenizer, prompts, args.new_tokens, **options)
                old = best[path, mode]
                best[path, mode] = (max(old[0], total), max(old[1], decode), min(old[2], prompt_ms))
    width = max(map(len, runs))
    print(f"best of {args.repeats} repeats:\n  {'model':<{width}}  {'mode':<22} {'tokens/s':>9} {'decode tokens/s':>16} "
          f"{'prompt ms':>10}")
    for (path, mode), (total, decode, prompt_ms) in best.items():
        print(f"  {path:<{width}}  {mode:<22} {total:>9,.0f} {decode:>16,.0f} {prompt_ms:>10.1f}")
    for path in runs:
        cached, compiled = best[path, "cache"][1], best[path, "cache + compiled step"][1]
        line = f"{path}: decoding, compiled vs eager cache {compiled / cached:.1f}x"
        if "full recomputation" in modes:
            line += f"; cache vs full recomputation {cached / best[path, 'full recomputation'][1]:.1f}x"
        print(line)
    if len(runs) > 1:
        base = args.model[0]
        for path in args.model[1:]:
            print(f"{path} against {base}, decoding tokens/s: " + ", ".join(
                f"{mode} {best[path, mode][1] / best[base, mode][1]:.2f}x" for mode in modes))


if __name__ == "__main__":
    main()
