"""Device policy: which device, bf16 autocast, torch.compile, determinism, seeding, and the
model FLOPs utilisation estimate (MFU)."""
import contextlib
import random
import shutil

import numpy as np
import torch


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


def estimate_mfu(flops_per_token, tokens_per_s, device):
    """Model FLOPs utilisation as in nanoGPT's estimate_mfu: training FLOPs per token
    (modules.flops_per_token) times tokens/s over the device's bf16 peak. None where the
    peak is unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((flops for key, flops in GPU_PEAK_FLOPS.items() if key in name), None)
    return None if peak is None else flops_per_token * tokens_per_s / peak


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


@contextlib.contextmanager
def deterministic(enabled):
    """torch.use_deterministic_algorithms inside the block when enabled (restored after). Compiled
    training on a CPU needs it to repeat: inductor's CPU kernels otherwise add embedding
    gradients with parallel atomic adds, whose order (and so the last bits) varies from run to
    run. Measured on CPU it costs no speed (bench/train_throughput.py, 'compiled fp32 det')."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
