"""Files that survive a crash: atomic saves (and the temporary files a killed save leaves),
digests, safetensors weights with their architecture, parameter counts."""
import contextlib
import hashlib
import json
import os
import shutil

import safetensors.torch
import torch


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


def count_parameters(model):
    """(total, embedding) unique parameter counts; tied matrices are counted once. Embeddings are
    the parameters the model's class names in `embedding_names`."""
    params = {id(p): (name, p) for name, p in model.named_parameters()}.values()
    total = sum(p.numel() for _, p in params)
    embedding = sum(p.numel() for name, p in params if name in model.embedding_names)
    return total, embedding
