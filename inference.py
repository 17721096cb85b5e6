"""Load a trained model and sample stories: `load_model`, batched KV-cached `generate`, a CLI.

    python inference.py --prompt "Once upon a time"            # streams from trained/llama_1m
    python inference.py --model trained/NAME --prompt "Tom" --temperature 0.7 --top_p 0.9

Prompts are encoded after an <|endoftext|> token, as every story is in training. An empty
prompt starts a story from scratch. Every Unicode string encodes (byte-level tokenizers). A
prompt longer than the context is an error; generation stops at <|endoftext|>, after
max_new_tokens, or when the context (max_seq_len) is full, whichever comes first.
"""
import math
import os
import sys

import torch

import config
import data
import runs
import tools
from modules import build_model, sizing

DEFAULT_MODEL = os.path.join(config.ROOT, "trained", "llama_1m")


def load_model(path=DEFAULT_MODEL, device="auto", **overrides):
    """(model in eval mode, tokenizer, ModelConfig) from a run folder. Weights are read with
    safetensors (no pickle, no code execution). `overrides` replace ModelConfig fields."""
    path = runs.find_run(path)
    cfg_path = os.path.join(path, "model_config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"no trained model at {path!r}: {cfg_path} is missing "
                                "(train one with `python train.py --name NAME`, then pass --model trained/NAME)")
    cfg = config.load_json(config.ModelConfig, cfg_path, **overrides)
    model, weights = build_model(cfg), os.path.join(path, "model.safetensors")
    if os.path.isfile(weights):
        tools.check_architecture(weights, runs.architecture(cfg))
    try:
        tools.load_weights(model, weights)
    except ValueError as e:
        if not overrides:
            raise
        raise ValueError(f"the overrides {overrides} change the model's shape, so the trained weights do not fit: "
                         f"{e}") from None
    return model.to(tools.pick_device(device)).eval(), data.load_tokenizer(cfg.tokenizer), cfg


def check_sampling(temperature, top_k, top_p, min_p, repetition_penalty=1.0, no_repeat_ngram_size=0):
    """ValueError naming the first invalid sampling argument."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature={temperature!r} is invalid: must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} is invalid: must be a positive integer or None")
    for name, v in (("top_p", top_p), ("min_p", min_p)):
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1):
            raise ValueError(f"{name}={v!r} is invalid: must be in (0, 1] or None")
    if not isinstance(repetition_penalty, (int, float)) or isinstance(repetition_penalty, bool) \
            or not 0 < repetition_penalty < math.inf:
        raise ValueError(f"repetition_penalty={repetition_penalty!r} is invalid: must be a finite number > 0 (1 = off)")
    if not isinstance(no_repeat_ngram_size, int) or isinstance(no_repeat_ngram_size, bool) or no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size={no_repeat_ngram_size!r} is invalid: must be an integer >= 0 (0 = off)")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    """Sample one id per row from logits (B, V). temperature 0 = greedy. Filters, applied in
    this order: top_k keeps the k most likely; top_p keeps the smallest set whose probability
    reaches p; min_p drops tokens below min_p * (top probability)."""
    check_sampling(temperature, top_k, top_p, min_p)
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    # largest logit shifted to 0 first: a tiny temperature then sends the others to -inf
    # (probability 0), never to inf/NaN; the float32 floor keeps 0 / temperature at 0
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / max(temperature, torch.finfo(torch.float32).tiny)
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False  # the most likely token always stays (a top_p that rounds to 0 in float32)
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    if min_p is not None:
        probs = probs.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, 0.0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def penalize_repeats(logits, history, repetition_penalty=1.0, no_repeat_ngram_size=0):
    """logits (B, V) of the next token after history (B, L) ids, adjusted as transformers'
    generate does: repetition_penalty p > 1 divides the positive logits of every token already
    in the row (multiplies the negative ones); no_repeat_ngram_size n bans every token that would
    repeat an n-gram the row already holds."""
    if repetition_penalty != 1.0:
        seen = logits.gather(1, history)
        logits = logits.scatter(1, history, torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty))
    n = no_repeat_ngram_size
    if n and history.shape[1] >= n:
        grams = history.unfold(1, n, 1)  # (B, L - n + 1, n)
        tail = history[:, history.shape[1] - (n - 1):]  # the last n - 1 ids: a match bans what followed them
        match = (grams[:, :, :-1] == tail[:, None, :]).all(dim=-1)
        banned = torch.zeros_like(logits, dtype=torch.long).scatter_add_(1, grams[:, :, -1], match.long()) > 0
        logits = logits.masked_fill(banned, float("-inf"))
    return logits


def encode_prompts(tokenizer, prompts, max_seq_len):
    """Left-padded (B, P) ids and (B,) pad counts; each prompt is [<|endoftext|>] + its tokens."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts={prompts!r:.80} is invalid: must be a list of strings, e.g. ['Once upon a time']")
    if not prompts:
        raise ValueError("prompts=[] is invalid: give at least one prompt ('' starts a story from scratch)")
    for p in prompts:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"prompt {p!r:.80} is invalid: must be UTF-8 text (it holds undecodable bytes)") from None
    ids = [[data.EOT_ID] + tokenizer.encode(p).ids for p in prompts]
    longest = max(map(len, ids))
    if longest >= max_seq_len:
        raise ValueError(f"a prompt of {longest} tokens is invalid: it must be shorter than the model's context, "
                         f"max_seq_len={max_seq_len}, so that at least one token can be generated")
    return tools.pad_rows(ids, data.PAD_ID, left=True), torch.tensor([longest - len(s) for s in ids])


def check_generation_fits(cfg, rows, device):
    """ValueError unless generating `rows` sequences at once fits in the memory free on device
    (per row: the prompt's logits and every layer's decoding state over the whole context)."""
    tools.check_fits(sizing.generation_memory(cfg, rows), device, f"generating {rows:,} samples at once",
                     "ask for fewer samples (num_samples) per call")


def compiled_decode_step(model):
    """model's forward compiled for one-token steps over a static cache (DecodeCache.make_static),
    built once per model and kept on it; a new batch size or source length recompiles. CPU: the
    C++ wrapper (no Python between kernels); CUDA: CUDA graphs, with the cache's tensors at fixed
    addresses."""
    step = model.__dict__.get("_compiled_decode_step")  # kept out of the module tree and state_dict
    if step is None:
        cuda = next(model.parameters()).device.type == "cuda"
        # CPU: batch-1 matrix-vector products become fused C++ loops (a library GEMV call costs
        # 10-30 us whatever its size at 1M parameters)
        step = torch.compile(model, options={"triton.cudagraphs": True} if cuda else
                             {"cpp_wrapper": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}})
        model.__dict__["_compiled_decode_step"] = step
    return step


@torch.inference_mode()
def generate(model, tokenizer, prompts, max_new_tokens=200, temperature=1.0, top_k=None, top_p=None,
             min_p=None, seed=None, stop_at_eot=True, use_cache=True, compile=False, on_token=None,
             return_ids=False, model_inputs=None, repetition_penalty=1.0, no_repeat_ngram_size=0,
             allowed_next=None):
    """Continue each prompt; returns the list of generated continuations (text, prompt excluded;
    with return_ids=True the (B, steps) tensor of generated ids, padding after a row's end).

    prompts: list of strings of any lengths (left-padded into one batch). use_cache=False
    recomputes the whole sequence for every new token (same result, much slower; for tests and
    benchmarks). compile=True runs every step after the prompt through `compiled_decode_step`
    (same logits; 5-15 s to compile once per model and batch size, then 1.7-3.5x faster per token
    than the eager cache on CPU, README 'Fast decoding': worth it for many samples in one
    session, not for one story). on_token(step, new_ids (B,)) is called after every step (for
    streaming). model_inputs: extra keyword inputs for model.new_cache (e.g. an encoder's
    input, run once per generation); plain language models take none. repetition_penalty and
    no_repeat_ngram_size (off by default) work against loops, see penalize_repeats.
    allowed_next(generated (B, step) ids) -> (B, V) bool mask constrains decoding: only the
    allowed ids can come next (e.g. MoMeM's NER may only copy a span of its question)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid: must be a positive integer")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= config.MAX_SEED):
        raise ValueError(f"seed={seed!r} is invalid: must be None or an integer in [0, 2**63 - 1 = {config.MAX_SEED}]")
    device = next(model.parameters()).device
    if compile and not use_cache:
        raise ValueError("compile=True needs use_cache=True: the compiled step decodes from the KV cache")
    if compile and not tools.compile_enabled("auto", device):
        raise ValueError(f"compile=True is not available on {device.type}: torch.compile needs CUDA, or on CPU "
                         "a C++ compiler (g++ or clang++); use compile=False")
    check_sampling(temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size)
    tokens, pad = encode_prompts(tokenizer, prompts, model.cfg.max_seq_len)
    check_generation_fits(model.cfg, len(tokens), device)
    tokens, pad = tokens.to(device), pad.to(device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    steps = min(max_new_tokens, model.cfg.max_seq_len - tokens.shape[1])
    new = torch.full((len(prompts), steps), data.PAD_ID, dtype=torch.long, device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    model_inputs = model_inputs or {}
    cache = model.new_cache(len(prompts), pad, **model_inputs) if use_cache else None
    step_model, next_input = model, tokens
    for step in range(steps):
        if not use_cache:  # full recomputation: a fresh cache over everything so far
            cache, next_input = model.new_cache(len(prompts), pad, **model_inputs), torch.cat([tokens, new[:, :step]], 1)
        logits, _, _ = step_model(next_input, cache=cache)
        if compile and step == 0:  # the prompt is in: from now on one token per step, fixed shapes
            cache.make_static()
            step_model = compiled_decode_step(model)
        logits = logits[:, -1]
        if repetition_penalty != 1.0 or no_repeat_ngram_size:
            logits = penalize_repeats(logits.float(), torch.cat([tokens, new[:, :step]], 1), repetition_penalty,
                                      no_repeat_ngram_size)
        if allowed_next is not None:
            logits = logits.float().masked_fill(~allowed_next(new[:, :step]).to(device), float("-inf"))
        next_id = sample_next(logits, temperature, top_k, top_p, min_p, generator)
        next_id = next_id.masked_fill(finished, data.PAD_ID)
        new[:, step] = next_id
        if on_token is not None:
            on_token(step, next_id)
        if stop_at_eot:
            finished |= next_id == data.EOT_ID
            if bool(finished.all()):
                new = new[:, :step + 1]
                break
        next_input = next_id[:, None]
    if return_ids:
        return new
    return [decode_continuation(tokenizer, row.tolist()) for row in new]


def decode_continuation(tokenizer, ids):
    """Text of generated ids, cut at the first <|endoftext|>."""
    if data.EOT_ID in ids:
        ids = ids[:ids.index(data.EOT_ID)]
    return tokenizer.decode([i for i in ids if i != data.PAD_ID])


def main(argv=None):
    parser = tools.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="run folder: a path, or a name under trained/ (default trained/llama_1m)")
    parser.add_argument("--prompt", default="Once upon a time", help="text to continue ('' = a new story; default "
                        "'Once upon a time')")
    parser.add_argument("--num_samples", type=int, default=1, help="stories to sample, batched (default 1)")
    parser.add_argument("--max_new_tokens", type=int, default=300, help="tokens to add at most; generation also stops "
                        "at <|endoftext|> or when the context (max_seq_len) is full (default 300)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top_k", type=int, default=None, help="keep the k most likely tokens (default off)")
    parser.add_argument("--top_p", type=float, default=None, help="keep the smallest set of tokens whose probability "
                        "reaches p (default off)")
    parser.add_argument("--min_p", type=float, default=0.05, help="drop tokens below min_p x the top probability "
                        "(default 0.05: on; --min_p 1 keeps only the top token)")
    parser.add_argument("--repetition_penalty", type=float, default=1.0, help="divide the logits of tokens already in "
                        "the text by this (transformers' repetition_penalty; 1.3 tames loops; default 1 = off)")
    parser.add_argument("--no_repeat_ngram_size", type=int, default=0, help="never repeat an n-gram of this many "
                        "tokens (transformers' option; default 0 = off)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: a fresh one)")
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu (default auto)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the one-token decode step (1.7-3.5x faster per token after 5-15 s of compiling)")
    config.add_config_arguments(parser, classes=(config.ModelConfig,),
                                title="ModelConfig fields (override the trained model's config; shapes must still match)")
    args = parser.parse_args(argv)
    try:
        if args.num_samples < 1:
            raise ValueError(f"--num_samples={args.num_samples} is invalid: must be a positive integer")
        model, tokenizer, cfg = load_model(args.model, args.device, **config.overrides_from_args(args, (config.ModelConfig,)))
        # before the list of num_samples prompts is even built
        check_generation_fits(cfg, args.num_samples, next(model.parameters()).device)
        kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                      top_p=args.top_p, min_p=args.min_p, seed=args.seed, compile=args.compile,
                      repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
        room = cfg.max_seq_len - len(encode_prompts(tokenizer, [args.prompt], cfg.max_seq_len)[0][0])
        if args.max_new_tokens > room:
            print(f"note: --max_new_tokens {args.max_new_tokens} exceeds the room the context leaves after this prompt "
                  f"(max_seq_len={cfg.max_seq_len}): at most {room} tokens are generated", file=sys.stderr)
        if args.num_samples == 1:  # stream the story as it is written
            ids = []

            def show(step, next_id):
                if step == 0:  # the prompt, once generation is known to work
                    print(args.prompt, end="", flush=True)
                before = decode_continuation(tokenizer, ids)
                ids.append(int(next_id[0]))
                print(decode_continuation(tokenizer, ids)[len(before):], end="", flush=True)

            generate(model, tokenizer, [args.prompt], on_token=show, **kwargs)
            print()
        else:
            for i, text in enumerate(generate(model, tokenizer, [args.prompt] * args.num_samples, **kwargs)):
                print(f"--- sample {i + 1} ---\n{args.prompt}{text}\n")
    except tools.USER_ERRORS as e:
        tools.fail(e)


if __name__ == "__main__":
    main()
