"""The CUDA code paths (marked `cuda`; skipped without a CUDA device, run by bench/gpu_check.py):
compiled static decode equals eager decode, bf16 autocast trains, fused AdamW and Muon step, and
a save and resume on the GPU ends bit-identical to an uninterrupted run."""
import os
import signal

import pytest
import torch

import inference
import presets
import train
from conftest import FIXTURE_DATA, tiny_configs
from data import load_tokenizer
from modules import build_model, registered_types

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_check.py)")]


@pytest.mark.parametrize("model_type", [t for t in registered_types() if t != "encdec"])
def test_compiled_decode_equals_eager_on_cuda(model_type):
    torch.manual_seed(0)
    cfg = presets.demo_config(model_type)
    model, tok = build_model(cfg).cuda().eval(), load_tokenizer(cfg.tokenizer)
    args = dict(max_new_tokens=8, temperature=0, return_ids=True, stop_at_eot=False)
    eager = inference.generate(model, tok, ["Once", "Tom and"], **args)
    compiled = inference.generate(model, tok, ["Once", "Tom and"], compile=True, **args)
    assert torch.equal(eager, compiled)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_bf16_training_with_fused_adamw_and_muon(optimizer, tmp_path):
    _, tcfg = tiny_configs(device="cuda", autocast="on", compile="on", optimizer=optimizer, max_steps=20,
                           out_dir=str(tmp_path))
    run = train.train(tiny_configs()[0], tcfg, progress=False)
    rows = open(os.path.join(run, "log_data.csv")).read().splitlines()
    assert float(rows[-1].split(",")[rows[0].split(",").index("val_loss")]) < 6.0


def test_save_and_resume_on_cuda_is_bit_identical(tmp_path):
    from safetensors.torch import load_file
    settings = dict(device="cuda", autocast="off", compile="off", max_steps=12, checkpoint_interval=6,
                    eval_interval=6, data_dir=FIXTURE_DATA)
    cfg, whole = tiny_configs(**settings, out_dir=str(tmp_path / "a"))
    train.train(cfg, whole, progress=False)
    _, first = tiny_configs(**settings, out_dir=str(tmp_path / "b"))
    stop = lambda row: row["step"] == 6 and os.kill(os.getpid(), signal.SIGTERM)  # saved, then stopped  # noqa: E731
    train.train(cfg, first, progress=False, on_eval=stop)
    train.resume_run(str(tmp_path / "b" / first.name), progress=False)
    a, b = (load_file(tmp_path / d / whole.name / "model.safetensors") for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
