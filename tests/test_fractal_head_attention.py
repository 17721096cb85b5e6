import math

import pytest
import torch

from config import ModelConfig
import presets
from presets import get_preset
from conftest import assert_cache_matches_full, assert_causal, random_token_heldout_loss, tiny_configs, validated
from modules import build_model
from modules.attention import Attention
from modules.fractal_head_attention import FractalHeadAttention, naive_reference


def fha_cfg(**kw):
    base = dict(model_type="fha", dim=32, num_layers=2, num_q_heads=3, num_kv_heads=1, head_dim=16,
                fractal_split=2, max_seq_len=64, tokenizer="bpe512")
    return validated(ModelConfig(**{**base, **kw}))


LAYOUTS = [(2, 3, 1, 16), (2, 3, 3, 16), (2, 4, 2, 32), (3, 3, 1, 36), (4, 2, 1, 16), (2, 1, 1, 16),
           (3, 2, 2, 12), (4, 3, 1, 64)]


@pytest.mark.parametrize("s, H, K, D", LAYOUTS)
@pytest.mark.parametrize("scale", ["full", "per_head"])
@pytest.mark.parametrize("rope", ["subband", "per_head"])
def test_matches_naive_loop_reference(s, H, K, D, scale, rope):
    cfg = fha_cfg(fractal_split=s, num_q_heads=H, num_kv_heads=K, head_dim=D, fractal_scale=scale, fractal_rope=rope)
    attn = FractalHeadAttention(cfg, 0)
    for B, T in ((1, 1), (3, 7), (2, 33)):
        x = torch.randn(B, T, cfg.dim)
        torch.testing.assert_close(attn(x, torch.arange(T)), naive_reference(attn, cfg, x), atol=1e-5, rtol=1e-5)


def test_matches_naive_loop_reference_without_rope():
    cfg = fha_cfg(pos_encoding="learned", num_kv_heads=3)  # positions come from the embedding: plain slices
    attn = FractalHeadAttention(cfg, 0)
    x = torch.randn(2, 9, cfg.dim)
    torch.testing.assert_close(attn(x, torch.arange(9)), naive_reference(attn, cfg, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("H, K", [(3, 1), (4, 2), (2, 2)])
def test_split_one_is_ordinary_attention(H, K):
    cfg = fha_cfg(fractal_split=1, num_q_heads=H, num_kv_heads=K)
    fha, plain = FractalHeadAttention(cfg, 0), Attention(cfg, 0)
    plain.load_state_dict(fha.state_dict())
    x = torch.randn(2, 19, cfg.dim)
    torch.testing.assert_close(fha(x, torch.arange(19)), plain(x, torch.arange(19)), atol=1e-6, rtol=1e-6)


def test_parameter_count_equals_ordinary_attention():
    cfg = fha_cfg()
    fha, plain = FractalHeadAttention(cfg, 0), Attention(cfg, 0)
    assert sum(p.numel() for p in fha.parameters()) == sum(p.numel() for p in plain.parameters())
    m, _ = get_preset("fha_1m")
    c, _ = get_preset("fha_1m_control")
    assert sum(p.numel() for p in build_model(m).parameters()) == sum(p.numel() for p in build_model(c).parameters())


def test_sub_head_scores_depend_only_on_relative_position():
    """Same content at every position: logits of (m, n) equal those of (m + c, n + c) in every sub-head."""
    for rope in ("subband", "per_head"):
        cfg = fha_cfg(fractal_rope=rope, head_dim=16)
        attn = FractalHeadAttention(cfg, 0)
        vec = torch.randn(1, 1, 1, 16).expand(1, 1, 20, 16)  # (B, heads, T, D)
        positions = torch.arange(20)
        for level in range(len(attn.levels)):
            if rope == "subband":  # rotated once at the full size, then sliced
                sub = attn.split_qk(attn.rope(vec, positions)[:, 0], level)
            else:
                sub = attn.rope_per_head(attn.split_qk(vec[:, 0], level), level, positions)
            scores = sub @ sub.transpose(-1, -2)  # (1, n, 20, 20)
            torch.testing.assert_close(scores[..., 5, 3], scores[..., 9, 7], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(scores[..., 12, 2], scores[..., 17, 7], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw, match", [
    (dict(head_dim=18, num_q_heads=3, fractal_split=2), "divisible by fractal_split"),
    (dict(head_dim=6, num_q_heads=2, fractal_split=2), "odd size"),
    (dict(fractal_split=0), "fractal_split=0"),
    (dict(fractal_scale="half"), "fractal_scale='half'"),
    (dict(fractal_rope="none"), "fractal_rope='none'"),
    (dict(num_q_heads=3, num_kv_heads=2), "num_q_heads=3"),
])
def test_invalid_layouts_are_rejected_with_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        fha_cfg(**kw)


@pytest.mark.parametrize("heads", [10_000, 1_000_000_000])
def test_huge_head_counts_are_refused_at_once_naming_the_fields(heads):
    """s**(H-1) is never built: refused in well under a second (it used to hang, or fail in
    Python's integer-to-string limit), naming num_q_heads and fractal_split."""
    import time
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"num_q_heads={heads} is invalid for fractal_split=3") as e:
        fha_cfg(num_q_heads=heads, num_kv_heads=1, fractal_split=3)
    assert "at most 3 query heads" in str(e.value)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ValueError, match=f"num_q_heads={heads}"):
        presets.get_preset("fha_1m", num_q_heads=heads, fractal_split=3)


@pytest.mark.parametrize("kw", [dict(), dict(num_kv_heads=3, fractal_scale="per_head", fractal_rope="per_head"),
                                dict(fractal_split=1)])
def test_causality_cache_and_leak(kw):
    cfg = fha_cfg(**kw)
    assert_causal(build_model(cfg), cfg.vocab_size)
    assert_cache_matches_full(build_model(cfg), cfg.vocab_size)


def test_random_token_leak_detector():
    cfg = fha_cfg(max_seq_len=32)
    loss = random_token_heldout_loss(build_model(cfg), cfg.vocab_size)
    assert loss >= math.log(cfg.vocab_size) - 0.05, loss


def test_summary_and_trace_show_the_layout(capsys):
    from modules import trace
    model = build_model(fha_cfg())
    assert "levels (sub-heads x size): 1x16, 2x8, 4x4" in repr(model)
    with trace(model):
        model(torch.randint(512, (2, 5)))
    out = capsys.readouterr().out
    assert "> FractalHeadAttention.attend_level" in out and "level = 2" in out


def test_loss_falls_on_fixture_corpus(tmp_path):
    import csv
    import os
    import train
    _, tcfg = tiny_configs(max_steps=40, eval_interval=20, lr=1e-2, out_dir=str(tmp_path))
    run = train.train(fha_cfg(), tcfg, progress=False)
    with open(os.path.join(run, "log_data.csv")) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_loss"]) < math.log(512) - 2
