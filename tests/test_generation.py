import os

import pytest
import torch

import data
import inference
import presets
import tools
from conftest import assert_cache_matches_full, tiny_configs, cli_error
from modules import build_model


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    """The tiny model after 100 steps on the fixture corpus (varied, non-degenerate predictions)."""
    import train
    cfg, train_cfg = tiny_configs(max_steps=100, eval_interval=100, checkpoint_interval=100, lr=1e-2,
                                  out_dir=str(tmp_path_factory.mktemp("runs")))
    run = train.train(cfg, train_cfg, progress=False)
    model, tok, _ = inference.load_model(run, device="cpu")
    return model, tok


@pytest.mark.parametrize("overrides", [dict(), dict(pos_encoding="learned", num_kv_heads=2),
                                       dict(pos_encoding="sinusoidal")])
def test_cached_logits_equal_full_forward(overrides):
    cfg = tiny_configs(**overrides)[0]
    assert_cache_matches_full(build_model(cfg), cfg.vocab_size)


def test_left_padded_rows_equal_unpadded(model_and_tokenizer):
    model, _ = model_and_tokenizer
    short = torch.randint(2, 512, (1, 5))
    padded = torch.cat([torch.full((1, 3), data.PAD_ID), short], dim=1)
    cache = model.new_cache(1, torch.tensor([3]))
    logits = model(padded, cache=cache)[0][:, 3:]
    torch.testing.assert_close(logits, model(short)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, seed=7),
                                      dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, seed=3)])
def test_cached_generation_equals_full_recomputation(model_and_tokenizer, sampling):
    model, tok = model_and_tokenizer
    prompts = ["Once upon a time", "Tom", "", "The big red ball was gone. Lily"]
    kwargs = dict(max_new_tokens=25, stop_at_eot=False, return_ids=True, **sampling)
    cached = inference.generate(model, tok, prompts, **kwargs)
    full = inference.generate(model, tok, prompts, use_cache=False, **kwargs)
    assert cached.shape == (4, 25) and torch.equal(cached, full)
    if sampling["temperature"] > 0:
        assert len(set(cached.flatten().tolist())) > 5  # sampled, so not one repeated token


def test_batched_generation_equals_one_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = ["Once upon a time", "A cat"]
    batch = inference.generate(model, tok, prompts, max_new_tokens=15, temperature=0)
    single = [inference.generate(model, tok, [p], max_new_tokens=15, temperature=0)[0] for p in prompts]
    assert batch == single


def test_sampler_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(inference.sample_next(logits, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(inference.sample_next(logits, top_p=0.8, generator=g).tolist()) == {0, 1}
    assert set(inference.sample_next(logits, top_p=0.81, generator=g).tolist()) == {0, 1, 2}
    assert set(inference.sample_next(logits, min_p=0.2, generator=g).tolist()) == {0, 1, 2}
    assert set(inference.sample_next(logits, min_p=0.5, generator=g).tolist()) == {0, 1}
    assert set(inference.sample_next(logits, generator=g).tolist()) == {0, 1, 2, 3}
    assert inference.sample_next(logits[:1], temperature=0).item() == 0
    counts = torch.bincount(inference.sample_next(logits, generator=g), minlength=4) / 2000
    assert abs(counts[0] - 0.5) < 0.05  # unfiltered sampling follows the distribution


@pytest.mark.parametrize("kwargs, match", [(dict(temperature=-1), "temperature=-1"), (dict(top_k=0), "top_k=0"),
                                           (dict(top_p=1.5), "top_p=1.5"), (dict(min_p=0), "min_p=0")])
def test_sampler_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        inference.sample_next(torch.zeros(1, 4), **kwargs)


def test_generation_bad_inputs(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="max_seq_len=64"):
        inference.generate(model, tok, ["word " * 100])
    with pytest.raises(ValueError, match="list of strings"):
        inference.generate(model, tok, "Once upon a time")
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        inference.generate(model, tok, ["a"], max_new_tokens=0)
    # the context bounds generation: a 60-token prompt leaves room for at most 4 new tokens
    prompt = tok.decode(torch.randint(300, 500, (59,)).tolist())
    n = len(tok.encode(prompt).ids) + 1
    out = inference.generate(model, tok, [prompt], max_new_tokens=50, temperature=0, stop_at_eot=False)
    assert len(tok.encode(out[0]).ids) <= 64 - n + 1


def test_load_model_errors(tmp_path, model_and_tokenizer):
    with pytest.raises(FileNotFoundError, match="model_config.json is missing"):
        inference.load_model(str(tmp_path))
    model, _ = model_and_tokenizer
    import config
    config.save_json(model.cfg, tmp_path / "model_config.json")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        inference.load_model(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="unreadable"):
        inference.load_model(str(tmp_path))
    tools.save_weights(model, str(tmp_path / "model.safetensors"))
    loaded, _, cfg = inference.load_model(str(tmp_path), device="cpu")
    x = torch.randint(512, (1, 9))
    torch.testing.assert_close(loaded(x)[0], model(x)[0])
    with pytest.raises(ValueError, match="does not fit|does not match"):
        inference.load_model(str(tmp_path), dim=64)


def test_shipped_model_tells_a_story():
    path = os.path.join(os.path.dirname(__file__), "..", "trained", "llama_1m")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        pytest.skip("the shipped model trained/llama_1m is not present")
    model, tok, _ = inference.load_model(path, device="cpu")
    text = inference.generate(model, tok, ["Once upon a time"], max_new_tokens=60, temperature=0)[0]
    words = text.split()
    assert len(words) > 10 and sum(w.strip('.,!?"').lower() in {"the", "a", "was", "and", "to", "she", "he"} for w in words) >= 3


@pytest.mark.parametrize("model_type", __import__("modules").registered_types())
def test_every_architecture_generates_batched_with_cache_equal_to_recomputation(model_type):
    cfg = presets.demo_config(model_type)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tok = data.load_tokenizer(cfg.tokenizer)
    prompts = ["Once upon", "A", "The dog ran to"]
    inputs = model.example_inputs(len(prompts))  # an encoder's source, say; {} for language models
    kwargs = dict(max_new_tokens=6, temperature=1.0, seed=5, stop_at_eot=False, return_ids=True, model_inputs=inputs)
    cached = inference.generate(model, tok, prompts, **kwargs)
    assert torch.equal(cached, inference.generate(model, tok, prompts, use_cache=False, **kwargs))
    # greedy: each row equals generating it alone (left padding changes nothing)
    greedy = {**kwargs, "temperature": 0}
    batch = inference.generate(model, tok, prompts, **greedy)
    for row, prompt in enumerate(prompts):
        alone = {**greedy, "model_inputs": {k: v[row:row + 1] for k, v in inputs.items()}}
        assert torch.equal(inference.generate(model, tok, [prompt], **alone)[0], batch[row])


def decode_one_by_one(model, x, pad, inputs, prefill, static, step_model=None):
    """Logits (B, T - prefill, V) of x fed as a prompt x[:, :prefill] then one token per forward."""
    cache = model.new_cache(x.shape[0], pad, **inputs)
    with torch.inference_mode():
        model(x[:, :prefill], cache=cache)
        if static:
            cache.make_static()
        step_model = model if step_model is None else step_model
        return torch.cat([step_model(x[:, t:t + 1], cache=cache)[0] for t in range(prefill, x.shape[1])], dim=1)


def padded_batch(model, batch_size, length=14):
    """Random ids with row 1 (if any) left-padded by 3 slots, its pad counts, and example inputs."""
    torch.manual_seed(1)
    x = torch.randint(2, model.cfg.vocab_size, (batch_size, length))
    pad = torch.tensor([0, 3][:batch_size])
    x[1:, :3] = data.PAD_ID
    return x, pad, model.example_inputs(batch_size)


@pytest.mark.parametrize("model_type", __import__("modules").registered_types())
def test_static_cache_steps_equal_growing_cache(model_type):
    """make_static: fixed-shape steps over all max_len slots give the growing cache's logits."""
    torch.manual_seed(0)
    model = build_model(presets.demo_config(model_type)).eval()
    x, pad, inputs = padded_batch(model, 2)
    torch.testing.assert_close(decode_one_by_one(model, x, pad, inputs, 5, static=True),
                               decode_one_by_one(model, x, pad, inputs, 5, static=False), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not tools.compile_enabled("auto", torch.device("cpu")), reason="torch.compile needs a C++ compiler")
@pytest.mark.parametrize("model_type", __import__("modules").registered_types())
def test_compiled_decode_step_equals_eager(model_type):
    """The compiled step (batch 1: fused matrix-vector loops; batch 2: left padding) gives the
    eager logits, and one compiled graph serves every step (no recompilation per position)."""
    torch.manual_seed(0)
    model = build_model(presets.demo_config(model_type)).eval()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    step = inference.compiled_decode_step(model)
    for batch_size in (1, 2):
        x, pad, inputs = padded_batch(model, batch_size)
        compiled = decode_one_by_one(model, x, pad, inputs, 5, static=True, step_model=step)
        torch.testing.assert_close(compiled, decode_one_by_one(model, x, pad, inputs, 5, static=False),
                                   atol=2e-5, rtol=2e-5)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames <= 2, f"{frames} graphs compiled for 2 batch sizes x 9 positions"


def test_generate_compile_arguments(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="compile=True needs use_cache=True"):
        inference.generate(model, tok, ["A"], compile=True, use_cache=False)


def test_cli_errors_and_streaming(tmp_path, capsys):
    with cli_error(capsys, "no trained model"):
        inference.main(["--model", str(tmp_path / "missing")])
    path = os.path.join(os.path.dirname(__file__), "..", "trained", "llama_1m")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        pytest.skip("the shipped model trained/llama_1m is not present")
    with cli_error(capsys, "max_seq_len=512"):
        inference.main(["--model", path, "--prompt", "word " * 600])
    assert capsys.readouterr().out == ""  # nothing printed before the error
    inference.main(["--model", path, "--prompt", "Tom", "--max_new_tokens", "5", "--seed", "0", "--device", "cpu"])
    assert capsys.readouterr().out.startswith("Tom")
