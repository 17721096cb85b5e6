"""Generation tokens/s: the KV cache, the KV cache with the compiled decode step, and full
recomputation.

    python bench/generate_throughput.py [--model trained/llama_1m] [--new_tokens 256] [--batch_size 1]
    python bench/generate_throughput.py --prompt_tokens 255 --new_tokens 256   # decode up to a full 512 context

Without the cache every new token recomputes the whole sequence (the original template's way).
The compiled step is timed after a warm-up generation; its one-off compile time is printed apart.
Compare the ratios printed at the end, measured in this one run.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import inference  # noqa: E402


def measure(model, tokenizer, prompts, new_tokens, repeats, **mode):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = inference.generate(model, tokenizer, prompts, max_new_tokens=new_tokens, stop_at_eot=False,
                                 seed=0, return_ids=True, **mode)
        best = min(best, time.perf_counter() - start)
    return out.numel() / best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=inference.DEFAULT_MODEL)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--prompt_tokens", type=int, default=0, help="a prompt of about this many tokens (story text; "
                   "default: 'Once upon a time'), so decoding runs at a longer context")
    p.add_argument("--no_recompute", action="store_true", help="skip full recomputation (slow at long contexts)")
    args = p.parse_args()
    model, tokenizer, cfg = inference.load_model(args.model, args.device)
    prompt = "Once upon a time"
    if args.prompt_tokens:
        words = ("Once upon a time there was a little girl named Lily. She liked to play in the park with her dog. "
                 * args.prompt_tokens).split(" ")
        while len(tokenizer.encode(prompt).ids) < args.prompt_tokens - 1:  # the story's <|endoftext|> comes first
            prompt = " ".join(words[:len(prompt.split(" ")) + 1])
    prompts = [prompt] * args.batch_size
    print(f"{args.model}: prompt of {len(tokenizer.encode(prompt).ids) + 1} tokens, {args.new_tokens} new tokens, batch {args.batch_size}, {next(model.parameters()).device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads (best of {args.repeats})")
    start = time.perf_counter()
    measure(model, tokenizer, prompts, 8, 1, compile=True)
    print(f"  compiling the decode step took {time.perf_counter() - start:.1f} s (once per model and batch size)")
    cached = measure(model, tokenizer, prompts, args.new_tokens, args.repeats)
    print(f"  cache ({type(model.new_cache(1)).__name__:<16})  {cached:>9,.0f} tokens/s")
    compiled = measure(model, tokenizer, prompts, args.new_tokens, args.repeats, compile=True)
    print(f"  cache + compiled step      {compiled:>9,.0f} tokens/s")
    print(f"  compiled vs eager cache    {compiled / cached:>9.1f}x")
    if not args.no_recompute:
        full = measure(model, tokenizer, prompts, args.new_tokens, args.repeats, use_cache=False)
        print(f"  full recomputation         {full:>9,.0f} tokens/s")
        print(f"  KV cache vs recomputation  {cached / full:>9.1f}x")
        print(f"  compiled vs recomputation  {compiled / full:>9.1f}x")


if __name__ == "__main__":
    main()
