import math

import pytest
import torch

import data
from config import ModelConfig
from presets import get_preset
from conftest import assert_cache_matches_full, assert_causal, random_token_heldout_loss, tiny_configs, validated
from modules import build_model
from modules.memory_mosaics import (ContextMemory, PersistentMemory, leaky_average, naive_context_memory, pmem_size,
                                    recurrence)


def mm_cfg(**kw):
    base = dict(model_type="mm", dim=16, num_layers=2, num_q_heads=2, num_kv_heads=1, mm_pmem_size=8,
                pos_encoding="none", norm_type="layernorm", max_seq_len=64, tokenizer="bpe512")
    return validated(ModelConfig(**{**base, **kw}))


@pytest.mark.parametrize("T, chunk", [(1, 64), (7, 64), (64, 16), (100, 16), (130, 64)])
def test_leaky_average_equals_recurrence(T, chunk):
    x = torch.randn(2, 3, T, 5, dtype=torch.float64)
    beta = torch.tensor([0.0, 0.7, 30.0], dtype=torch.float64)  # no decay, moderate, and huge (no overflow)
    torch.testing.assert_close(leaky_average(x, beta, chunk=chunk), recurrence(x, beta))
    state = torch.randn(2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(leaky_average(x, beta, state, chunk=chunk), recurrence(x, beta, state))


def test_leaky_average_gradcheck():
    x = torch.randn(1, 2, 11, 3, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.3, 2.0], dtype=torch.float64, requires_grad=True)
    state = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: leaky_average(a, b, s, chunk=4), (x, beta, state))


def test_context_memory_matches_naive_loop_and_norms():
    cfg = mm_cfg()
    mem = ContextMemory(cfg, 0).double()
    x = torch.randn(3, 21, cfg.dim, dtype=torch.float64)
    captured = {}
    mem.out.register_forward_pre_hook(lambda m, a: captured.setdefault("y", a[0]))
    mem(x, None)
    y, k, v = naive_context_memory(mem, x)
    torch.testing.assert_close(captured["y"], y.transpose(1, 2).reshape(3, 21, cfg.dim))
    assert torch.all(captured["y"][:, 0] == 0)  # empty memory at t = 0
    sigma = torch.exp((10 * mem.keys.key_scale).clamp(max=5))
    torch.testing.assert_close(k.norm(dim=-1), sigma[None, :, None].expand(3, 2, 21))
    torch.testing.assert_close(mem.keys(x).norm(dim=-1), sigma[None, :, None].expand(3, 2, 21))
    rho = torch.exp(10 * mem.value_scale)
    torch.testing.assert_close(v[:, :, :-1].norm(dim=-1), rho[None, :, None].expand(3, 2, 20))


def test_single_token_and_no_nans():
    cfg = mm_cfg()
    model = build_model(cfg)
    logits = model(torch.randint(512, (2, 1)))[0]
    assert logits.shape == (2, 1, 512) and torch.isfinite(logits).all()
    assert torch.isfinite(model(torch.randint(512, (2, 40)))[0]).all()


def test_head_isolation():
    cfg = mm_cfg()
    mem = ContextMemory(cfg, 0)
    x = torch.randn(2, 9, cfg.dim)
    captured = []
    mem.out.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach().clone()))
    mem(x, None)
    with torch.no_grad():
        mem.W_v.weight[8:] += torch.randn(8, cfg.dim)  # rows of head 1
    mem(x, None)
    before, after = captured
    torch.testing.assert_close(before[..., :8], after[..., :8])
    assert not torch.allclose(before[..., 8:], after[..., 8:])


def test_persistent_memory_invariant_to_slot_permutation_and_causal():
    cfg = mm_cfg()
    pm = PersistentMemory(cfg, 0)
    x = torch.randn(2, 12, cfg.dim)
    base = pm(x)
    perm = torch.randperm(pm.size)
    with torch.no_grad():
        pm.slot_keys.copy_(pm.slot_keys[:, perm])
        pm.slot_values.copy_(pm.slot_values[:, perm])
    torch.testing.assert_close(pm(x), base)
    changed = x.clone()
    changed[:, 7:] = torch.randn(2, 5, cfg.dim)
    torch.testing.assert_close(pm(changed)[:, :7], base[:, :7])


def logits_from_embeddings(model, emb):
    x = emb
    for layer in model.layers:
        x = layer(x, torch.arange(emb.shape[1]))
    return model.output_logits(x)


def test_jacobian_causality_and_prefix_consistency():
    cfg = mm_cfg(num_layers=3)
    model = build_model(cfg).double().eval()
    tokens = torch.randint(2, 512, (1, 12))
    emb = model.embed_tokens(tokens, torch.arange(12)).detach().requires_grad_(True)
    logits = logits_from_embeddings(model, emb)
    for t in range(12):
        grad, = torch.autograd.grad(logits[0, t].sum(), emb, retain_graph=True)
        assert torch.all(grad[0, t + 1:] == 0), t  # exactly zero, not merely small
        if t > 0:
            assert grad[0, :t].abs().sum() > 0
    full = model(tokens)[0]
    for t in range(12):
        torch.testing.assert_close(model(tokens[:, :t + 1])[0][:, -1], full[:, t])


@pytest.mark.parametrize("kw", [dict(), dict(num_q_heads=4, mm_pmem_size=0)])
def test_causality_and_cache(kw):
    cfg = mm_cfg(**kw)
    assert_causal(build_model(cfg), cfg.vocab_size)
    assert_cache_matches_full(build_model(cfg), cfg.vocab_size)


def test_left_padded_decoding_equals_unpadded():
    cfg = mm_cfg()
    model = build_model(cfg).eval()
    short = torch.randint(2, 512, (1, 6))
    padded = torch.cat([torch.full((1, 4), data.PAD_ID), short], dim=1)
    cache = model.new_cache(1, torch.tensor([4]))
    first = model(padded, cache=cache)[0][:, 4:]
    nxt = torch.randint(2, 512, (1, 1))
    second = model(nxt, cache=cache)[0]
    full = model(torch.cat([short, nxt], dim=1))[0]
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, atol=1e-5, rtol=1e-5)


def test_parameter_parity_with_a_gpt_block():
    common = dict(dim=32, num_layers=1, num_q_heads=4, tokenizer="bpe512", max_seq_len=64, norm_type="layernorm")
    gpt = build_model(ModelConfig(**common, num_kv_heads=4, mlp_gated=False, mlp_hidden_mult=4.0, pos_encoding="none"))
    mm = build_model(ModelConfig(**common, model_type="mm", pos_encoding="none", mm_pmem_size=0))
    assert pmem_size(mm.cfg) == 112  # 3.5 * dim
    matrices = lambda model: sum(p.numel() for p in model.layers.parameters() if p.dim() >= 2)  # noqa: E731
    assert matrices(mm) == matrices(gpt) == 12 * 32 * 32
    llama, _ = get_preset("llama_1m")
    mm_1m, _ = get_preset("mm_1m")
    count = lambda cfg: sum(p.numel() for p in build_model(cfg).parameters())  # noqa: E731
    assert abs(count(mm_1m) / count(llama) - 1) < 0.02


def test_scalars_take_no_weight_decay_and_initial_loss():
    import train
    cfg, _ = get_preset("mm_1m")
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = train.make_optimizer(model, get_preset("mm_1m")[1], torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    for scalar in ("leaky_beta", "key_scale", "value_mix", "value_scale", "out_scale"):
        assert any(n.endswith(scalar) for n in no_decay), scalar
    x, y = torch.randint(cfg.vocab_size, (2, 2, 256))
    assert abs(model(x, y)[1].item() - math.log(cfg.vocab_size)) < 0.15


@pytest.mark.parametrize("kw, match", [(dict(pos_encoding="rope"), "pos_encoding='rope'"),
                                       (dict(head_dim=4), "head_dim=4"), (dict(mm_pmem_size=-1), "mm_pmem_size=-1")])
def test_bad_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        mm_cfg(**kw)


def test_random_token_leak_detector():
    cfg = mm_cfg(max_seq_len=32, dim=32)
    loss = random_token_heldout_loss(build_model(cfg), cfg.vocab_size)
    assert loss >= math.log(cfg.vocab_size) - 0.05, loss


def test_loss_falls_on_fixture_corpus(tmp_path):
    import csv
    import os
    import train
    _, tcfg = tiny_configs(max_steps=40, eval_interval=20, lr=1e-2, out_dir=str(tmp_path))
    run = train.train(mm_cfg(dim=32), tcfg, progress=False)
    with open(os.path.join(run, "log_data.csv")) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_loss"]) < math.log(512) - 2
