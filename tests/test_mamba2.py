"""Mamba-2: the chunked scan equals the recurrence, causality, the leak detector, the recurrent
cache (parity, left padding, constant memory) and the preset's parameter match."""
import math

import pytest
import torch

import inference
import presets
from config import ModelConfig
from conftest import assert_cache_matches_full, assert_causal, random_token_heldout_loss, tiny_configs
from modules import build_model
from modules.mamba2 import Mamba2Cache, ssd_chunked, ssd_sequential, ssd_step


def mamba_cfg(**kw):
    base = dict(model_type="mamba2", dim=32, num_layers=2, pos_encoding="none", tokenizer="bpe512", max_seq_len=64,
                mamba_head_dim=16, mamba_state_dim=8, mamba_chunk_size=8)
    return ModelConfig(**{**base, **kw})


def random_scan_inputs(batch=2, T=37, heads=4, p=8, groups=2, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, heads, p, generator=g)
    log_decay = -torch.rand(batch, T, heads, generator=g) * 2
    b, c = torch.randn(batch, T, groups, n, generator=g), torch.randn(batch, T, groups, n, generator=g)
    state = torch.randn(batch, heads, p, n, generator=g)
    return x, log_decay, b, c, state


@pytest.mark.parametrize("chunk", [1, 4, 8, 16, 37, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_scan_equals_the_recurrence(chunk, with_state):
    x, a, b, c, state = random_scan_inputs()  # T = 37: not a multiple of any chunk above but 1 and 37
    state = state if with_state else None
    y_ref, h_ref = ssd_sequential(x, a, b, c, state)
    y, h = ssd_chunked(x, a, b, c, chunk, state)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_one_step_equals_the_recurrence():
    x, a, b, c, state = random_scan_inputs(T=1)
    y_ref, h_ref = ssd_sequential(x, a, b, c, state)
    y, h = ssd_step(x[:, 0], a[:, 0], b[:, 0], c[:, 0], state)
    torch.testing.assert_close(y, y_ref[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=1e-6)


def test_a_large_decay_stays_finite_in_the_chunked_form():
    x, a, b, c, _ = random_scan_inputs()
    y, h = ssd_chunked(x, a * 200, b, c, 16)  # exp(-400) underflows to 0; nothing may become NaN
    assert torch.isfinite(y).all() and torch.isfinite(h).all()


@pytest.mark.parametrize("kw", [dict(), dict(mamba_groups=2, mamba_chunk_size=5), dict(mamba_conv_width=2)])
def test_causality_and_cache(kw):
    cfg = mamba_cfg(**kw)
    assert_causal(build_model(cfg), cfg.vocab_size)
    assert_cache_matches_full(build_model(cfg), cfg.vocab_size)


def test_random_token_leak_detector():
    cfg = mamba_cfg(max_seq_len=32)
    loss = random_token_heldout_loss(build_model(cfg), cfg.vocab_size)
    assert loss >= math.log(cfg.vocab_size) - 0.05, loss


def test_left_padded_batch_decodes_as_each_row_alone():
    torch.manual_seed(0)
    model = build_model(mamba_cfg()).eval()
    a, b = torch.randint(512, (1, 9)), torch.randint(512, (1, 12))
    batch = torch.cat([torch.cat([torch.ones(1, 3, dtype=torch.long), a], 1), b])
    cache = model.new_cache(2, torch.tensor([3, 0]))
    with torch.no_grad():
        logits = model(batch, cache=cache)[0]
        nxt = torch.tensor([[7], [11]])
        step = model(nxt, cache=cache)[0]
        alone_a = model(torch.cat([a, nxt[:1]], 1))[0]
        alone_b = model(torch.cat([b, nxt[1:]], 1))[0]
    torch.testing.assert_close(logits[0, 3:], alone_a[0, :9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[0, 0], alone_a[0, 9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1], alone_b[0, :12], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1, 0], alone_b[0, 12], atol=1e-5, rtol=1e-5)


def test_the_cache_does_not_grow_with_the_tokens_generated():
    model = build_model(mamba_cfg(max_seq_len=256)).eval()
    cache = model.new_cache(1)
    before = cache.nbytes()
    with torch.no_grad():
        model(torch.randint(512, (1, 5)), cache=cache)
        for _ in range(100):
            model(torch.randint(512, (1, 1)), cache=cache)
    assert isinstance(cache, Mamba2Cache) and cache.nbytes() == before and cache.length == 105
    # and it is the size of the state, not of the context: a context 8x longer, the same cache
    assert build_model(mamba_cfg(max_seq_len=2048)).new_cache(1).nbytes() == before


def test_generate_with_the_recurrent_cache_equals_recomputation():
    from data import load_tokenizer
    cfg = mamba_cfg()
    model, tok = build_model(cfg).eval(), load_tokenizer(cfg.tokenizer)
    prompts = ["Once upon a time", "Tom"]
    fast = inference.generate(model, tok, prompts, max_new_tokens=12, temperature=0, return_ids=True)
    slow = inference.generate(model, tok, prompts, max_new_tokens=12, temperature=0, use_cache=False, return_ids=True)
    assert torch.equal(fast, slow)


def test_preset_is_parameter_matched_to_llama_1m():
    count = lambda name: sum(p.numel() for p in build_model(presets.get_preset(name)[0]).parameters())
    assert abs(count("mamba2_1m") / count("llama_1m") - 1) < 0.02


@pytest.mark.parametrize("field, value, match", [
    ("mamba_head_dim", 24, "mamba_head_dim=24 is invalid: it must divide"),
    ("mamba_groups", 3, "mamba_groups=3 is invalid"),
    ("pos_encoding", "rope", "pos_encoding='rope' is invalid for model_type='mamba2'"),
    ("mamba_state_dim", 0, "mamba_state_dim=0 is invalid"),
])
def test_bad_knobs_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        presets.get_preset("mamba2_1m", **{field: value})


def test_sizes_and_trains(tmp_path):
    import csv
    import os
    import train
    sized = presets.sized("mamba2_1m", "0.2M")
    cfg = presets.get_preset("mamba2_1m", size="0.2M")[0]
    assert cfg.dim == sized["dim"] and abs(presets.non_embedding_params(cfg) / 2e5 - 1) < 0.1
    _, tcfg = tiny_configs(max_steps=40, eval_interval=20, lr=1e-2, out_dir=str(tmp_path))
    run = train.train(mamba_cfg(), tcfg, progress=False)
    with open(os.path.join(run, "log_data.csv")) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_loss"]) < math.log(512) - 2


def test_the_mixing_matrix_is_the_scan_written_as_attention():
    """The duality: the scan's output equals M x with the explicit (T x T) matrix the probe draws."""
    torch.manual_seed(0)
    model = build_model(mamba_cfg()).eval()
    mixer, u = model.layers[0].mixer, torch.randn(2, 11, 32)
    seen = {}
    original = mixer.scan
    mixer.scan = lambda *a, **k: seen.setdefault("y", original(*a, **k))
    with torch.no_grad():
        mixer(u)
        m, x = mixer.mixing_matrix(u)
    y = seen["y"] - mixer.D[:, None] * x
    torch.testing.assert_close(torch.einsum("bhij,bjhp->bihp", m, x), y, atol=1e-5, rtol=1e-5)
    assert (m.triu(1) == 0).all()
