import math
import os

import pytest
import torch

import train
from config import ModelConfig
from presets import get_preset
from conftest import assert_cache_matches_full, assert_causal, random_token_heldout_loss, tiny_configs, validated
from modules import GPT, build_model
from modules.future_former import FutureFormer, chunk_spans, future_chunks


def ff_cfg(**kw):
    base = dict(model_type="ff", dim=32, num_layers=4, num_q_heads=2, num_kv_heads=1, head_dim=16, max_seq_len=64,
                tokenizer="bpe512", ff_scales=3, ff_mult=2)
    return validated(ModelConfig(**{**base, **kw}))


def slow_chunks(targets, start, size):
    """The chunk of every position written as a Python loop (reference for future_chunks)."""
    B, T = targets.shape
    out = torch.full((B, T, size), -100, dtype=torch.long)
    for b in range(B):
        for t in range(T):
            for j in range(size):
                if t + start + j < T:
                    out[b, t, j] = targets[b, t + start + j]
    return out


def test_windows_on_arange():
    b = torch.arange(100, 133)[None]  # inputs b[0..31], targets y[t] = b[t+1]
    x, y = b[:, :-1], b[:, 1:]
    disjoint = chunk_spans(ff_cfg())
    assert disjoint == [(1, 2), (3, 4), (7, 8)]  # b[t+2..t+3], b[t+4..t+7], b[t+8..t+15]
    chunks = [future_chunks(y, start, size) for start, size in disjoint]
    assert chunks[0][0, 0].tolist() == [102, 103] and chunks[1][0, 0].tolist() == [104, 105, 106, 107]
    assert chunks[2][0, 0].tolist() == list(range(108, 116))
    assert chunks[2][0, 20].tolist() == [128, 129, 130, 131, 132] + [-100] * 3  # padded past the end
    assert chunks[0][0, 30].tolist() == [132, -100] and (chunks[0][0, 31] == -100).all()  # last: all masked
    assert chunk_spans(ff_cfg(ff_window="nested")) == [(1, 2), (1, 4), (1, 8)]  # every chunk from b[t+2]
    assert chunk_spans(ff_cfg(ff_mult=3, ff_scales=2)) == [(1, 3), (4, 9)]
    assert [name for name in build_model(ff_cfg()).term_names()] == ["future_8_15", "future_4_7", "future_2_3"]
    g = torch.Generator().manual_seed(0)
    for start, size in disjoint + chunk_spans(ff_cfg(ff_window="nested", ff_mult=3, ff_scales=2)):
        y = torch.randint(0, 50, (2, 13), generator=g)
        y[1, 9] = -100
        assert torch.equal(future_chunks(y, start, size), slow_chunks(y, start, size))


@pytest.mark.parametrize("target", ["sum", "mean", "max", "norm", "linear"])
def test_pooled_target_equals_a_direct_gather(target):
    model = build_model(ff_cfg(ff_target=target))
    y = torch.randint(0, 500, (3, 20))
    y[1, 12:] = -100
    y[2, 5] = -100
    for start, size in chunk_spans(model.cfg):
        pooled, has_any = model.pooled_target(y, start, size)
        chunk = future_chunks(y, start, size)
        valid = chunk != -100
        emb = model.embed.weight.detach()[chunk.clamp_min(0)]
        if target == "norm":
            emb = torch.nn.functional.normalize(emb, dim=-1)
        count = valid.sum(-1, keepdim=True)
        if target == "max":
            expected = emb.masked_fill(~valid[..., None], -1e9).amax(dim=2) * (count > 0)
        else:
            expected = (emb * valid[..., None]).sum(dim=2) / (1 if target == "sum" else count.clamp_min(1))
        if target == "linear":
            expected = model.target_proj(expected)
        assert torch.equal(has_any, valid.any(-1))
        torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target,loss", [("mean", "cos"), ("sum", "mse"), ("max", "mae"), ("linear", "cos"),
                                         ("norm", "mse"), ("bag", "bag_ce"), ("bag", "bce")])
def test_targets_never_change_logits_and_every_output_is_causal(target, loss):
    model = build_model(ff_cfg(ff_target=target, ff_loss=loss)).eval()
    x = torch.randint(2, 500, (2, 40))
    y = torch.randint(2, 500, (2, 40))
    logits, _, terms = model(x, y)
    torch.testing.assert_close(model(x)[0], logits, rtol=0, atol=0)
    other_logits, other_loss, _ = model(x, torch.randint(2, 500, (2, 40)))
    assert torch.equal(other_logits, logits) and set(terms) == {"ntp", "future_8_15", "future_4_7", "future_2_3"}
    assert all(torch.isfinite(v) for v in terms.values())
    # every scale's prediction (and the logits) at position t depends on tokens <= t only
    outputs = []
    hooks = [head.register_forward_hook(lambda m, i, o: outputs.append(o)) for head in model.heads]
    for t in (0, 5, 21, 38):
        outputs.clear()
        model(x)
        base = [o.clone() for o in outputs] + [model(x)[0]]
        changed = x.clone()
        changed[:, t + 1:] = torch.randint(2, 500, changed[:, t + 1:].shape)
        outputs.clear()
        model(changed)
        after = [o.clone() for o in outputs] + [model(changed)[0]]
        for a, b in zip(base, after):
            torch.testing.assert_close(b[:, :t + 1], a[:, :t + 1], atol=1e-5, rtol=0)
    for h in hooks:
        h.remove()
    assert_causal(model, 500, length=40)


def test_random_token_leak_detector(monkeypatch):
    cfg = ff_cfg(max_seq_len=32, ff_lambda=1.0)
    held_out = random_token_heldout_loss(build_model(cfg), cfg.vocab_size)
    assert held_out >= math.log(cfg.vocab_size) - 0.05, held_out

    # the detector catches the original's mistake: read-ins fed the *true* pooled future
    class TeacherForced(FutureFormer):
        def forward(self, tokens, targets=None, cache=None):
            self.true_targets = targets
            return super().forward(tokens, targets, cache)

    def leaky_head(head, x):
        model = leaky
        j = list(model.heads).index(head)
        start, size = model.spans[j]
        return model.pooled_target(model.true_targets, start, size)[0] * 10

    leaky = TeacherForced(cfg)
    from modules.future_former import FutureHead
    monkeypatch.setattr(FutureHead, "forward", leaky_head)
    held_out = random_token_heldout_loss(leaky, cfg.vocab_size)
    assert held_out < math.log(cfg.vocab_size) - 1.0, held_out


def test_lambda_zero_is_the_baseline_bit_for_bit():
    cfg = ff_cfg(ff_lambda=0.0, ff_scales=2)
    ff = build_model(cfg).eval()
    gpt_cfg = ModelConfig(**{k: v for k, v in ff_cfg(ff_scales=2).__dict__.items()
                             if k not in ("vocab_size", "mlp_hidden_dim", "model_type") and not k.startswith("ff_")})
    gpt = GPT(gpt_cfg).eval()
    missing, unexpected = ff.load_state_dict(gpt.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("heads.", "read_ins.")) for k in missing)
    x, y = torch.randint(2, 500, (2, 2, 48))
    logits, loss, terms = ff(x, y)
    gpt_logits, gpt_loss, _ = gpt(x, y)
    assert torch.equal(logits, gpt_logits) and torch.equal(loss, gpt_loss) and torch.equal(loss, terms["ntp"])
    # with lambda > 0 the loss is ntp + sum of lambda**c * scale c (nearest c = 1)
    weighted = build_model(ff_cfg(ff_lambda=0.5, ff_scales=2)).eval()
    weighted.load_state_dict(ff.state_dict())
    _, loss, terms = weighted(x, y)
    torch.testing.assert_close(loss, terms["ntp"] + 0.5 * terms["future_2_3"] + 0.25 * terms["future_4_7"])


def test_cache_matches_full_and_generation():
    model = build_model(ff_cfg())
    for p in model.parameters():  # the read-ins start at zero; make them matter
        torch.nn.init.normal_(p, std=0.1)
    assert_cache_matches_full(model, 500, length=30)


def test_every_parameter_learns_and_futures_fall():
    model = build_model(ff_cfg(ff_scales=2, ff_lambda=1.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pattern = torch.arange(2, 9).repeat(9)[None].repeat(4, 1)  # period 7: the future is predictable
    first = None
    for step in range(60):
        _, loss, terms = model(pattern[:, :-1], pattern[:, 1:])
        opt.zero_grad()
        loss.backward()
        if step == 1:  # after one update the zero-initialised read-in outputs pass gradient on
            dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not dead, dead
        opt.step()
        first = first or {k: float(v) for k, v in terms.items()}
    assert all(float(terms[k]) < first[k] / 2 for k in first), (first, terms)
    assert float(terms["future_2_3"]) < 0.1  # cosine to the true pooled future approaches 1


def test_config_errors():
    with pytest.raises(ValueError, match="ff_scales=4 is invalid"):
        ff_cfg(ff_scales=4)
    with pytest.raises(ValueError, match="ff_loss='bag_ce' does not fit ff_target='mean'"):
        ff_cfg(ff_loss="bag_ce")
    with pytest.raises(ValueError, match="ff_lambda=-1"):
        ff_cfg(ff_lambda=-1.0)
    with pytest.raises(ValueError, match="look 15 tokens ahead"):
        ff_cfg(max_seq_len=12)
    with pytest.raises(ValueError, match="ff_window='far'"):
        ff_cfg(ff_window="far")


def test_presets_match_the_control():
    counts = {}
    for preset in ("ff_1m", "ff_1m_control"):
        cfg = get_preset(preset)[0]
        counts[preset] = sum(p.numel() for p in build_model(cfg).parameters())
    assert counts["ff_1m"] == counts["ff_1m_control"]
    assert get_preset("ff_1m")[0].ff_lambda > 0 and get_preset("ff_1m_control")[0].ff_lambda == 0


def test_each_scale_is_a_log_column_on_train_and_validation(tmp_path):
    cfg, tcfg = tiny_configs(model_type="ff", num_layers=3, ff_scales=2, max_steps=20, eval_interval=10,
                             lr=1e-2, out_dir=str(tmp_path))
    run = train.train(cfg, tcfg, progress=False)
    import pandas as pd
    log = pd.read_csv(os.path.join(run, "log_data.csv"))
    for term in ("ntp", "future_2_3", "future_4_7"):
        assert log[f"train_{term}"].notna().all() and log[f"val_{term}"].notna().all()
    # val_loss is the next-token cross-entropy, not the total
    assert log["val_loss"].tolist() == pytest.approx(log["val_ntp"].tolist(), rel=1e-5)
    assert (log["train_loss"] > log["train_ntp"]).all()
