"""The armor: what every layer above leans on, and nothing of the project itself is imported
here. Device policy (device, bf16 autocast, compile, seeding, MFU), free memory and `check_fits`,
atomic saves and digests, weights I/O, the command-line error contract (one line, exit 2),
markdown tables and padding."""
import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys

import numpy as np
import torch
import safetensors.torch


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


def count_parameters(model):
    """(total, embedding) unique parameter counts; tied matrices are counted once. Embeddings are
    the parameters the model's class names in `embedding_names`."""
    params = {id(p): (name, p) for name, p in model.named_parameters()}.values()
    total = sum(p.numel() for _, p in params)
    embedding = sum(p.numel() for name, p in params if name in model.embedding_names)
    return total, embedding


# --- memory: refuse what cannot fit before allocating it ----------------------------------------
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


# --- optimizers ----------------------------------------------------------------------------------
class Optimizers:
    """Several optimizers stepped as one (Muon for the matrices, AdamW for the rest): the trainer
    sets every param group's lr, steps, zeroes and checkpoints them together."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def step(self):
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state):
        if set(state) != set(self.optimizers):
            raise ValueError(f"the checkpoint holds the optimizer state of {sorted(state)[:4]}, not of "
                             f"{sorted(self.optimizers)}: it was saved with another TrainConfig.optimizer")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

    def describe(self):
        """'muon 12,345 and adamw 6,789 parameters'."""
        return " and ".join(f"{name} {sum(p.numel() for g in opt.param_groups for p in g['params']):,}"
                            for name, opt in self.optimizers.items()) + " parameters"


# --- files: atomic writes, digests, weights ---------------------------------------------------------------
class SaveError(OSError):
    """A file could not be written (disk full, no permission); the previous version is kept."""


def atomic_save(save, path):
    """Run save(tmp_path), flush it to disk, then rename onto path: a crash (even SIGKILL or a
    power cut) leaves either the old file or the new one, never half of one. When the write
    fails (disk full, ...) the temporary file is removed, the previous file is kept, and a
    SaveError says so."""
    tmp = f"{path}.{os.getpid()}.tmp"  # per process: two ranks may prepare one data cache at once
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


def remove_orphaned_temps(folder):
    """Delete the temporary files atomic_save left in folder when its process was killed mid-save
    (`NAME.<pid>.tmp` of a pid no longer running); returns how many. Call it holding the
    folder's lock, so no live writer is cut short."""
    removed = 0
    for name in os.listdir(folder):
        stem, _, pid = name[:-len(".tmp")].rpartition(".") if name.endswith(".tmp") else ("", "", "")
        if stem and pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


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


def save_weights(model, path, architecture=None):
    """safetensors file of the model's parameters and buffers (shared tensors stored once), with
    the digest of its state and `architecture` (the config fields that decide what the weights
    mean, a dict) in the file's metadata."""
    metadata = {"sha256": digest(model.state_dict())}
    if architecture is not None:
        metadata["architecture"] = json.dumps(architecture, sort_keys=True)
    atomic_save(lambda p: safetensors.torch.save_model(model, p, metadata=metadata), path)


def check_architecture(path, architecture):
    """ValueError when the safetensors file at path records (in its metadata) another
    architecture than `architecture` (a dict of config fields): shapes can fit while the
    weights mean nothing. Files written before architectures were recorded pass."""
    try:
        with safetensors.safe_open(path, "pt") as f:
            trained = json.loads((f.metadata() or {}).get("architecture", "{}"))
    except Exception:  # unreadable: load_weights says how
        return
    differ = {k: (trained[k], v) for k, v in architecture.items() if k in trained and trained[k] != v}
    if differ:
        said = ", ".join(f"{k}={new!r} (the weights were trained with {k}={old!r})" for k, (old, new) in differ.items())
        raise ValueError(f"weights file {path} belongs to another architecture: the config asks for {said}; the "
                         "shapes may fit but the weights would mean nothing. Use the run's own model_config.json")


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


# --- text output and batches ----------------------------------------------------------------------
def markdown_table(table, formats=None, float_format="{:.4f}"):
    """A pandas DataFrame as a markdown table: `formats` maps a column to a format string,
    other floats take float_format, None and NaN are left blank."""
    formats, columns = formats or {}, list(table.columns)
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            v = row[c]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("")
            else:
                cells.append(formats.get(c, float_format if isinstance(v, float) else "{}").format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pad_rows(rows, value, left=False, length=None):
    """Lists of ids -> one (len(rows), length or the longest) int64 tensor, each row padded with
    `value` on the right (or on the left: generation's prompts end where decoding starts)."""
    length = length or max(map(len, rows))
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for r, ids in enumerate(rows):
        if len(ids):
            out[r, slice(length - len(ids), None) if left else slice(0, len(ids))] = torch.as_tensor(ids)
    return out
