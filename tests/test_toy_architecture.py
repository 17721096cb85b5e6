"""Adding an idea touches only its own file: a toy architecture written to a temporary file is
registered, trained, sized, sampled and compared without editing any file of the project."""
import importlib

import torch

import inference
import model_comparison
import modules
import presets
import train
from conftest import tiny_configs

TOY = '''
"""Toy: the baseline with a gated shortcut instead of its MLP (an idea in one file)."""
import torch
from torch import nn

from modules.attention import Attention
from modules.layer import ResidualLayer
from modules.logging import LoggingModule, log_io
from modules.model import GPT


class Gate(LoggingModule):
    """(B, T, dim) -> (B, T, dim): x * sigmoid(w), one learned gate per channel."""

    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    @log_io
    def forward(self, x, cache=None):
        return x * torch.sigmoid(self.w)


class Toy(GPT):
    ignored_fields = ("mlp_activation", "mlp_gated", "mlp_hidden_mult")
    presets = {"toy_1m": dict(model_type="toy", dim=128, num_layers=4, num_q_heads=2, num_kv_heads=1, head_dim=64,
                              tokenizer="bpe2048", max_seq_len=512)}

    @staticmethod
    def depth_floor(cfg):
        return 3

    def make_layer(self, cfg, layer_idx):
        return ResidualLayer(cfg, Attention(cfg, layer_idx), mlp=Gate(cfg.dim))
'''


def test_a_toy_architecture_in_its_own_file_trains_sizes_generates_and_compares(tmp_path, monkeypatch):
    (tmp_path / "toy_idea.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_idea").Toy
    monkeypatch.setitem(modules.MODEL_REGISTRY, "toy", toy)  # its registry line
    monkeypatch.setattr(presets, "PRESETS", {**presets.PRESETS, **toy.presets})  # gathered as at import

    cfg, _ = presets.get_preset("toy_1m", size="0.2M")
    assert cfg.num_layers >= 3 and abs(presets.non_embedding_params(cfg) / 2e5 - 1) < 0.1
    runs = []
    for name, model_type in (("toy", "toy"), ("base", "gpt")):
        model_cfg, train_cfg = tiny_configs(name=name, out_dir=str(tmp_path / "trained"), max_steps=10, eval_interval=5,
                                            model_type=model_type, mlp_hidden_mult=4.0 if model_type == "toy" else 2.0)
        runs.append(train.train(model_cfg, train_cfg, progress=False))
    model, tokenizer, loaded = inference.load_model(runs[0], device="cpu")
    assert isinstance(model, toy) and loaded.model_type == "toy"
    ids = inference.generate(model, tokenizer, ["Once", "Tom"], max_new_tokens=6, temperature=0, return_ids=True)
    slow = inference.generate(model, tokenizer, ["Once", "Tom"], max_new_tokens=6, temperature=0, return_ids=True,
                              use_cache=False)
    assert torch.equal(ids, slow)
    table, _ = model_comparison.compare(runs, stories=0, progress=False)
    assert list(table["model_type"]) == ["toy", "gpt"] and table["final_val_loss"].notna().all()
