"""Small shared helpers: device choice, seeding, parameter counts, memory checks, atomic
checkpoint files, run locks, and the command-line error contract."""
import argparse
import contextlib
import fcntl
import hashlib
import math
import os
import random
import shutil
import sys

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


# --- memory: refuse what cannot fit before allocating it ----------------------------------------
def count_parameters_unbuilt(model_cfg):
    """(parameters, bytes of parameters and buffers) of a config, built on the meta device (no
    memory is allocated, whatever the sizes; sizes past int64 count as infinite)."""
    from modules import MODEL_REGISTRY
    try:
        with torch.device("meta"):
            model = MODEL_REGISTRY[model_cfg.model_type](model_cfg)
    except RuntimeError as e:
        if "overflow" in str(e):
            return math.inf, math.inf
        raise
    params = sum(p.numel() for p in model.parameters())
    return params, sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def check_weights_fit(model_cfg, device=torch.device("cpu")):
    """ValueError unless the model's weights and tables fit in the memory free on device,
    decided without allocating: a quick size bound first (so num_layers=10**6 does not even
    build on the meta device), then the exact count from a meta build."""
    c = model_cfg
    what = (f"the weights of this model (dim={c.dim}, num_layers={c.num_layers}, max_seq_len={c.max_seq_len}, "
            f"vocab_size={c.vocab_size})")
    advice = "lower dim, num_layers or max_seq_len"
    # a lower bound for every architecture: its main matrices and position tables at 2 bytes per
    # value (they hold 4), so it never refuses what the exact count below would allow
    per_layer = (2 * c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim * c.dim + 3 * c.dim * c.mlp_hidden_dim
    lower_bound = 2 * (c.vocab_size * c.dim + c.num_layers * per_layer + c.max_seq_len * c.head_dim)
    check_fits(lower_bound, device, what, advice)
    check_fits(count_parameters_unbuilt(model_cfg)[1], device, what, advice)


def estimate_training_memory(model_cfg, train_cfg):
    """Bytes a training step needs, estimated before anything is built: parameters x 16 (fp32
    weights, gradients, AdamW's two moments) + activations kept for backward (per token and
    layer about 20 x dim + 4 x the MLP's hidden width floats, plus the attention outputs) +
    the logits (3 fp32 copies of batch x context x vocab: logits, softmax, gradient) + about
    80 MiB of work space the first steps allocate at any size. Measured on CPU (growth of peak
    RSS over two steps, tests/test_hparam_search.py) it is within a factor 1.5 either way."""
    params, _ = count_parameters_unbuilt(model_cfg)
    tokens = train_cfg.batch_size * model_cfg.max_seq_len
    per_token_layer = 20 * model_cfg.dim + 4 * model_cfg.mlp_hidden_dim + 4 * model_cfg.num_q_heads * model_cfg.head_dim
    activations = 4 * tokens * model_cfg.num_layers * per_token_layer
    logits = 3 * 4 * tokens * model_cfg.vocab_size
    return 16 * params + activations + logits + 80 * 2**20


def free_memory(device):
    """Bytes free on device: CUDA's free memory, else the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 * 2**30  # unknown (not Linux): assume a laptop's


def check_fits(nbytes, device, what, advice):
    """ValueError when nbytes (an estimate) exceed the memory free on device."""
    free = free_memory(device)
    if nbytes > free:
        raise ValueError(f"{what} needs about {nbytes / 2**30:,.4g} GiB but only {free / 2**30:,.1f} GiB is free "
                         f"on {device.type}: {advice}")


# --- files: atomic writes, run locks ---------------------------------------------------------------
class SaveError(OSError):
    """A file could not be written (disk full, no permission); the previous version is kept."""


def atomic_save(save, path):
    """Run save(tmp_path), flush it to disk, then rename onto path: a crash (even SIGKILL or a
    power cut) leaves either the old file or the new one, never half of one. When the write
    fails (disk full, ...) the temporary file is removed, the previous file is kept, and a
    SaveError says so."""
    tmp = f"{path}.tmp"
    try:
        save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        with contextlib.suppress(OSError):  # measured with the partial file still there
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
            if free < 2**20:  # torch's own message for a full disk is "unexpected pos N vs M"
                reason = f"no space left on its disk ({free // 1024} KiB free)"
        with contextlib.suppress(OSError):
            os.remove(tmp)
        kept = "the previous version is kept" if os.path.exists(path) else "nothing was written"
        raise SaveError(f"could not write {path}: {reason} ({kept}); free some disk space and resume") from None


@contextlib.contextmanager
def run_lock(folder, name):
    """Hold FOLDER/.NAME.lock while a run writes FOLDER/NAME, so two runs of one name cannot
    write over each other. The OS drops the lock when the process ends, even on SIGKILL, so a
    crash never leaves a stale lock."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f".{name}.lock")
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"run {os.path.join(folder, name)} is in use by another process (lock {path}); "
                                  "wait for it to finish or pick another --name") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- command line: one line `error: ...`, exit code 2 ---------------------------------------------
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, SaveError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error contract: a bad argument prints one line
    `error: ...` (naming the argument and the value) and exits with code 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        fail(message)


def fail(message):
    """End a command-line program on a user error: one line on stderr, exit code 2."""
    message = " ".join(str(message).split())  # one line, whatever the message holds
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def digest(obj):
    """SHA-256 (hex) of nested dicts and lists of tensors and plain values, in order. Stored with
    weights and checkpoints and checked on load: neither format notices flipped bits by itself."""
    h = hashlib.sha256()

    def walk(x):
        if torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, dict):
            for key, value in x.items():
                h.update(f"K{key!r}".encode())
                walk(value)
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for value in x:
                walk(value)
        else:
            h.update(f"V{x!r}".encode())
    walk(obj)
    return h.hexdigest()


def save_weights(model, path):
    """safetensors file of the model's parameters and buffers (shared tensors stored once), with
    the digest of its state in the file's metadata."""
    metadata = {"sha256": digest(model.state_dict())}
    atomic_save(lambda p: safetensors.torch.save_model(model, p, metadata=metadata), path)


def load_weights(model, path):
    """Load a safetensors file into model; no pickle, so no code runs. Clear errors when it is
    missing, corrupt, or made for another config."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        missing, unexpected = safetensors.torch.load_model(model, path, strict=False)
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        mismatches = [line for line in lines if "mismatch" in line]  # torch: "size mismatch for NAME: ..."
        reason = mismatches[0][:300] + (f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else "") \
            if mismatches else lines[0][:300]
        raise ValueError(f"weights file {path} is unreadable or does not fit model_config.json beside it: {reason}") from None
    if missing or unexpected:
        differences = "; ".join(_some(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected))
                                if keys)
        raise ValueError(f"weights file {path} does not match model_config.json beside it ({differences}): the two "
                         "files must come from the same run; restore them from it, or train again")
    with safetensors.safe_open(path, "pt") as f:
        stored = (f.metadata() or {}).get("sha256")  # files written before digests were kept have none
    if stored and stored != digest(model.state_dict()):
        raise ValueError(f"weights file {path} is damaged: its tensors do not match the checksum saved with them; "
                         "restore it from a backup, or train again")
    return model


def _some(label, keys, shown=4):
    """'missing 12 key(s): a, b, c, d, ...' (a long list of state names cut short)."""
    names = sorted(keys)
    return f"{label} {len(names)} key(s): {', '.join(names[:shown])}{', ...' if len(names) > shown else ''}"


def run_dir(train_cfg):
    out = train_cfg.out_dir if os.path.isabs(train_cfg.out_dir) else os.path.join(config.ROOT, train_cfg.out_dir)
    return os.path.join(out, train_cfg.name)


def read_log(run_dir):
    """log_data.csv of a run as a DataFrame of its complete rows; a clear error when it is
    missing, empty, damaged or holds no evaluation yet."""
    import pandas as pd
    path = os.path.join(run_dir, "log_data.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: the run has not reached its first evaluation "
                                "(train it, or resume it with `python train.py --resume RUN`)")
    try:
        log = pd.read_csv(path)
    except Exception as e:
        raise ValueError(f"{path} is damaged ({str(e).splitlines()[0][:150]}); resume the run to rewrite it") from None
    needed = {"step", "tokens", "val_loss"}
    if not needed <= set(log.columns):
        raise ValueError(f"{path} lacks the columns {sorted(needed - set(log.columns))}: not a log of this project")
    for column in needed:
        log[column] = pd.to_numeric(log[column], errors="coerce")
    log = log.dropna(subset=sorted(needed)).reset_index(drop=True)  # a row cut short by a crash
    if log.empty:
        raise ValueError(f"{path} holds no complete evaluation row yet; train or resume the run first")
    return log


def read_run(run_dir):
    """What a run folder reports, read once for its README and for the comparison table: the
    ModelConfig, log_data.csv (pandas), its last row, the row of lowest validation loss, and
    the parameter counts (total, non-embedding)."""
    from types import SimpleNamespace
    from modules import build_model
    cfg = config.load_json(config.ModelConfig, os.path.join(run_dir, "model_config.json"))
    log = read_log(run_dir)
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
