import math

import pytest
import torch

from conftest import assert_causal, tiny_configs
from modules import build_model, trace
from modules.attention import Attention
from modules.layer import ResidualLayer
from modules.mlp import MLP
from modules.norm import Norm


def model_cfg(**kw):
    return tiny_configs(**kw)[0]


@pytest.mark.parametrize("norm_type", ["rmsnorm", "layernorm", "cosinenorm"])
def test_norm_shapes_and_registered_parameters(norm_type):
    norm = Norm(16, norm_type, affine=True, bias=True)
    x = torch.randn(2, 5, 16)
    assert norm(x).shape == (2, 5, 16)
    assert {n for n, _ in norm.named_parameters()} == {"weight", "bias"}
    if norm_type == "rmsnorm":
        torch.testing.assert_close(norm(x), x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())
    if norm_type == "cosinenorm":
        torch.testing.assert_close(norm(x).norm(dim=-1), torch.ones(2, 5))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
@pytest.mark.parametrize("gated", [True, False])
def test_mlp_shapes_and_activation_applied(activation, gated):
    mlp = MLP(16, 24, activation, gated)
    x = torch.randn(2, 5, 16)
    out = mlp(x)
    assert out.shape == (2, 5, 16)
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[activation]
    h = mlp.up(x)
    expected = mlp.down(act(h[..., :24]) * h[..., 24:]) if gated else mlp.down(act(h))
    torch.testing.assert_close(out, expected)
    # with its activation the MLP is not linear: f(-x) != -f(x)
    assert not torch.allclose(mlp(-x), -out, atol=1e-4)


@pytest.mark.parametrize("heads", [(2, 1), (2, 2), (4, 2)])
def test_attention_and_layer_shapes(heads):
    cfg = model_cfg(num_q_heads=heads[0], num_kv_heads=heads[1], head_dim=8)
    attn = Attention(cfg, 0)
    x = torch.randn(3, 7, cfg.dim)
    assert attn(x, torch.arange(7)).shape == (3, 7, cfg.dim)
    layer = ResidualLayer(cfg, Attention(cfg, 0))
    assert layer(x, torch.arange(7)).shape == (3, 7, cfg.dim)


def test_attention_matches_naive_softmax():
    cfg = model_cfg(num_q_heads=4, num_kv_heads=2, head_dim=8, pos_encoding="none")
    attn = Attention(cfg, 0)
    x = torch.randn(2, 6, cfg.dim)
    q, k, v = attn.project_qkv(x, torch.arange(6))
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(8)
    scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    expected = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 6, -1))
    torch.testing.assert_close(attn(x, torch.arange(6)), expected)


GRID = [dict(), dict(pos_encoding="learned", norm_type="layernorm", mlp_gated=False, mlp_activation="gelu"),
        dict(pos_encoding="sinusoidal", post_branch_norm=True, tie_embeddings=False),
        dict(num_kv_heads=2, norm_type="cosinenorm", scale_embedding=False)]


@pytest.mark.parametrize("overrides", GRID)
def test_model_shapes_loss_and_grads(overrides):
    cfg = model_cfg(**overrides)
    model = build_model(cfg)
    x = torch.randint(cfg.vocab_size, (2, 16))
    logits, loss, terms = model(x, torch.randint(cfg.vocab_size, (2, 16)))
    assert logits.shape == (2, 16, cfg.vocab_size) and loss.dim() == 0 and terms == {}
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model(x)[1] is None


@pytest.mark.parametrize("overrides", GRID)
def test_causality_future_tokens_never_change_past_logits(overrides):
    cfg = model_cfg(**overrides)
    assert_causal(build_model(cfg), cfg.vocab_size)


def test_initial_loss_close_to_ln_vocab():
    from presets import get_preset
    for preset in ("llama_1m", "gpt2_1m"):
        cfg = get_preset(preset)[0]
        torch.manual_seed(0)
        model = build_model(cfg)
        x, y = torch.randint(cfg.vocab_size, (2, 2, 256))
        loss = model(x, y)[1].item()
        assert abs(loss - math.log(cfg.vocab_size)) < 0.15, (preset, loss)


def test_padding_targets_are_ignored():
    cfg = model_cfg()
    model = build_model(cfg)
    x = torch.randint(2, cfg.vocab_size, (1, 8))
    y = torch.randint(2, cfg.vocab_size, (1, 8))
    padded = y.clone()
    padded[0, 4:] = -100  # ignored targets
    logits = model(x)[0]
    expected = torch.nn.functional.cross_entropy(logits[0, :4], y[0, :4])
    torch.testing.assert_close(model(x, padded)[1], expected)


def test_trace_prints_shapes_for_the_whole_model(capsys):
    cfg = model_cfg()
    model = build_model(cfg)
    model(torch.randint(cfg.vocab_size, (3, 7)))
    assert capsys.readouterr().out == ""  # off by default
    with trace(model, mute={"forward_rope"}):
        model(torch.randint(cfg.vocab_size, (3, 7)))
    out = capsys.readouterr().out
    assert "> GPT.forward" in out and "> Attention.attend" in out and "> MLP.forward" in out
    assert f"(3, 7, {cfg.dim})" in out and f"q: (3, {cfg.num_q_heads}, 7, {cfg.head_dim}) float32" in out
    assert f"output: (3, 7, {cfg.vocab_size}) float32" in out
    assert "    > Attention.project_qkv" in out  # nested calls are indented by depth
    with trace(model, mute={"project_qkv", "forward"}):
        model(torch.randint(cfg.vocab_size, (3, 7)))
    out = capsys.readouterr().out
    assert "project_qkv" not in out and "GPT.forward" not in out and "> Attention.attend" in out
    model(torch.randint(cfg.vocab_size, (3, 7)))
    assert capsys.readouterr().out == ""  # off again after the block
