"""Small shared helpers: device choice, seeding, parameter counts, atomic checkpoint files."""
import contextlib
import os
import random
import shutil

import numpy as np
import torch
import safetensors.torch

import config


def pick_device(name="auto"):
    """'auto' -> cuda, then mps, then cpu; an explicit name is checked for availability. The
    device comes back set up for speed: TF32 for the fp32 matmuls and convolutions left on CUDA
    (under bf16 autocast, few)."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if name not in available:
        raise ValueError(f"device={name!r} is invalid: must be one of ['auto', 'cuda', 'mps', 'cpu']")
    if not available[name]:
        raise ValueError(f"device={name!r} is not available on this machine; use 'auto' or 'cpu'")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def to_device(batch, device):
    """A dict batch with every tensor moved to device (through pinned memory to a GPU, so the
    copy overlaps with the work already queued there)."""
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


# dense bf16 peak FLOP/s of common GPUs, for the MFU estimate (matched against the device name)
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12,
                  "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


def estimate_mfu(params, model_cfg, tokens_per_s, device):
    """Model FLOPs utilisation as in nanoGPT's estimate_mfu (PaLM appendix B): 6 FLOPs per
    parameter per token plus 12 * layers * dim * context for attention, over the device's bf16
    peak. None where the peak is unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((flops for key, flops in GPU_PEAK_FLOPS.items() if key in name), None)
    if peak is None:
        return None
    flops_per_token = 6 * params + 12 * model_cfg.num_layers * model_cfg.dim * model_cfg.max_seq_len
    return flops_per_token * tokens_per_s / peak


def autocast_enabled(setting, device):
    """bf16 autocast: 'on'/'off', or 'auto' = on where bf16 matmuls are fast (CUDA with bf16, CPUs with AVX-512 BF16/AMX)."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or _cpu_has_bf16()
    return False


def _cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def autocast(device, enabled):
    """Context manager: bf16 autocast on `device` when enabled, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_enabled(setting, device):
    """torch.compile: 'on'/'off', or 'auto' = on for cuda, and for cpu when a C++ compiler (which
    the CPU backend needs) is installed; off on mps, where support is partial."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cpu":
        return any(shutil.which(c) for c in ("g++", "c++", "clang++", "cl"))
    return device.type == "cuda"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(model):
    """(total, embedding) unique parameter counts; tied matrices are counted once."""
    params = {id(p): (name, p) for name, p in model.named_parameters()}.values()
    total = sum(p.numel() for _, p in params)
    embedding = sum(p.numel() for name, p in params if "embed" in name)
    return total, embedding


def atomic_save(save, path):
    """Run save(tmp_path), then rename onto path, so a crash never leaves a half-written file."""
    tmp = f"{path}.tmp"
    save(tmp)
    os.replace(tmp, path)


def save_weights(model, path):
    """safetensors file of the model's parameters and buffers (shared tensors stored once)."""
    atomic_save(lambda p: safetensors.torch.save_model(model, p), path)


def load_weights(model, path):
    """Load a safetensors file into model; no pickle, so no code runs. Clear errors when it is
    missing, corrupt, or made for another config."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        missing, unexpected = safetensors.torch.load_model(model, path, strict=False)
    except Exception as e:
        raise ValueError(f"weights file {path} is unreadable or does not fit the model config: "
                         f"{str(e).splitlines()[0][:300]}") from None
    if missing or unexpected:
        raise ValueError(f"weights file {path} does not match the model config: "
                         f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return model


def run_dir(train_cfg):
    out = train_cfg.out_dir if os.path.isabs(train_cfg.out_dir) else os.path.join(config.ROOT, train_cfg.out_dir)
    return os.path.join(out, train_cfg.name)


def read_run(run_dir):
    """What a run folder reports, read once for its README and for the comparison table: the
    ModelConfig, log_data.csv (pandas), its last row, the row of lowest validation loss, and
    the parameter counts (total, non-embedding)."""
    import pandas as pd
    from types import SimpleNamespace
    from modules import build_model
    cfg = config.load_json(config.ModelConfig, os.path.join(run_dir, "model_config.json"))
    log = pd.read_csv(os.path.join(run_dir, "log_data.csv"))
    total, embedding = count_parameters(build_model(cfg))
    return SimpleNamespace(model_cfg=cfg, log=log, last=log.iloc[-1], best=log.loc[log["val_loss"].idxmin()],
                           params=total, non_embedding_params=total - embedding)


def demo_config(model_type):
    """A tiny ModelConfig of `model_type` (its first preset, shrunk) for shape traces and demos."""
    preset = next((name for name, fields in config.PRESETS.items() if fields.get("model_type", "gpt") == model_type), None)
    if preset is None:
        raise ValueError(f"model_type={model_type!r} has no preset in config.PRESETS; add one")
    return config.get_preset(preset, dim=16, num_layers=2, head_dim=8, max_seq_len=16, tokenizer="bpe512",
                             mm_pmem_size=8, ff_scales=1)[0]
