"""The look inside (modules/probe.py) on tiny models of every architecture: the recorded weights
are the ones the fast code used, rows sum to one, and causal maps put no weight on the future."""
import pytest
import torch
import torch.nn.functional as F

import presets
from modules import build_model, probe, registered_types


def test_explicit_weights_reproduce_the_fused_kernel():
    q, k, v = torch.randn(2, 4, 7, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    mask = torch.rand(2, 1, 7, 7) > 0.3
    mask[..., 0] = True  # every row sees something
    for kwargs in (dict(is_causal=True), dict(attn_mask=mask), dict(is_causal=True, scale=1.0)):
        w = probe.explicit_weights(q, k, enable_gqa=True, **kwargs)
        expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        torch.testing.assert_close(w @ v.repeat_interleave(2, dim=1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", registered_types())
def test_every_architecture_shows_its_attention(model_type):
    torch.manual_seed(0)
    cfg = presets.demo_config(model_type)
    model = build_model(cfg)
    tokens = torch.randint(2, cfg.vocab_size, (2, 12))
    maps = probe.attention_maps(model, tokens, **model.example_inputs(2))
    assert maps and any(m.causal for m in maps)
    for m in maps:
        assert m.weights.dim() == 4 and m.weights.shape[0] == 2
        torch.testing.assert_close(m.weights.sum(-1), torch.ones(m.weights.shape[:-1]), atol=1e-5, rtol=0)
        if m.causal:
            assert m.weights.shape[-1] == m.weights.shape[-2]
            assert (m.weights.triu(1) == 0).all(), m.module
    assert model.training  # the model is left as it was
    if model_type == "fha":  # one call per level, each with s**i sub-heads
        levels = [m for m in maps if m.module == "layers.0.mixer"]
        assert [m.weights.shape[1] for m in levels] == [n for n, _ in __import__("modules").fractal_head_attention.level_sizes(cfg)]
    if model_type == "mm":
        decays = probe.decays(model)
        assert decays.shape == (cfg.num_layers, cfg.num_q_heads) and (decays >= 0).all()
        memory = [m for m in maps if m.module.endswith("mixer")]  # retrieval: query t+1 over keys <= t
        assert memory[0].weights.shape[-1] == 11 and memory[0].causal
    if model_type == "mamba2":  # the SSD mixing matrix, one head per panel
        heads = cfg.mamba_expand * cfg.dim // cfg.mamba_head_dim
        assert [m.weights.shape[1:] for m in maps] == [(heads, 12, 12)] * cfg.num_layers
        assert probe.decays(model).shape == (cfg.num_layers, heads) and (probe.decays(model) > 0).all()
    if model_type == "gpt":
        with pytest.raises(ValueError, match="no per-head decay rates"):
            probe.decays(model)
    if model_type == "ff":
        agreement = model.future_agreement(tokens)
        assert list(agreement) == model.term_names() and all(len(c) == 11 for c in agreement.values())
