"""The run folder, trained/NAME/: the one place that knows what is in it and how it is written.

    model_config.json, train_config.json   the configs (config.py's JSON)
    model.safetensors                       the weights (digest and architecture in its metadata)
    log_data.csv                            one row per evaluation
    checkpoint.pt                           resumable: weights, optimizer, step, RNG states, data position
    README.md                               how the run was made and what it reached

`open_run` holds the run's lock and makes (or overwrites) the folder; `save_checkpoint` /
`restore_checkpoint` write and read the resumable state; `append_log` / `truncate_log` keep the
log consistent with the checkpoint; `read_run` is what the README and the comparison report.
"""
import contextlib
import csv
import fcntl
import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import torch

import config
import data
import presets
import tools
from modules import MODEL_REGISTRY, build_model, flops_per_token


TRAINED = os.path.join(config.ROOT, "trained")


def run_dir(train_cfg):
    out = train_cfg.out_dir if os.path.isabs(train_cfg.out_dir) else os.path.join(config.ROOT, train_cfg.out_dir)
    return os.path.join(out, train_cfg.name)


def find_run(name):
    """The folder a run name or path means, one rule everywhere (--resume, --model, the
    comparison): the path as given when it is a folder, else trained/NAME."""
    for folder in (name, os.path.join(TRAINED, name)):
        if os.path.isdir(folder):
            return os.path.normpath(folder)
    return name  # the caller's own check says what is missing


def architecture(model_cfg):
    """The config fields that decide what a model's weights mean, shapes aside (stored with them)."""
    own = MODEL_REGISTRY[model_cfg.model_type].own_fields
    names = ("model_type", "pos_encoding", "norm_type", "mlp_activation", *own)
    return {name: getattr(model_cfg, name) for name in names}


def load_configs(run_dir, data_dir=""):
    """(ModelConfig, TrainConfig) stored in a run folder, with the architecture's and dataset's
    checks. The data folder: `data_dir` when given; else the folder the run stored, when it
    exists on this machine (a resumed run keeps its data); else the dataset's environment
    variable (MMS_DATA_DIR): a stored path may only mean something where the run was trained."""
    model_cfg = config.load_json(config.ModelConfig, os.path.join(run_dir, "model_config.json"))
    train_cfg = config.load_json(config.TrainConfig, os.path.join(run_dir, "train_config.json"))
    presets.check(model_cfg, train_cfg)
    env = getattr(data.dataset_class(train_cfg.dataset), "data_dir_env", None)
    stored = train_cfg.data_dir and os.path.join(config.ROOT, train_cfg.data_dir)  # relative: to the project
    if data_dir or (env and os.environ.get(env) and not (stored and os.path.isdir(stored))):
        train_cfg.data_dir = data_dir  # "" = the environment variable's folder
    return model_cfg, train_cfg


MACHINE_FIELDS = ("data_dir", "device")  # where a run trains, not what it is: may differ on resuming elsewhere


def changed_fields(folder, model_cfg, train_cfg, ignore=()):
    """The config fields whose values differ from those the run folder stored (the machine's
    fields and `ignore` aside)."""
    stored = (config.load_json(config.ModelConfig, os.path.join(folder, "model_config.json")),
              config.load_json(config.TrainConfig, os.path.join(folder, "train_config.json")))
    return [k for cfg, old in zip((model_cfg, train_cfg), stored) for k, v in config.to_dict(cfg).items()
            if k not in (*MACHINE_FIELDS, *ignore) and config.to_dict(old)[k] != v]


def run_state(folder, model_cfg, train_cfg):
    """'new', 'started' (a checkpoint to resume) or 'finished' (README.md, written at max_steps)
    for a run that a study or benchmark owns; a folder made with other settings is refused."""
    if not os.path.isfile(os.path.join(folder, "train_config.json")):
        return "new"
    changed = changed_fields(folder, model_cfg, train_cfg)
    if changed:
        raise ValueError(f"run {folder} was made with other settings ({', '.join(changed)} differ): the plan "
                         "changed; give the study another name, or delete that folder to train it again")
    return "finished" if os.path.isfile(os.path.join(folder, "README.md")) else "started"


# --- opening: the lock, a fresh folder ------------------------------------------------------------
@contextlib.contextmanager
def run_lock(folder, name):
    """Hold FOLDER/.NAME.lock while a run writes FOLDER/NAME, so two runs of one name cannot
    write over each other. The OS drops the lock when the process ends, even on SIGKILL, so a
    crash never leaves a stale lock; a run that ends removes the file."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f".{name}.lock")
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not os.path.exists(path) or os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                raise BlockingIOError  # the holder removed the file as we opened it: it was in use
        except BlockingIOError:
            raise FileExistsError(f"run {os.path.join(folder, name)} is in use by another process (lock {path}); "
                                  "wait for it to finish or pick another --name") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # no lock files left behind (git status stays clean)
                os.remove(path)
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _locked(job, out):
    """Rank 0 holds the run's lock for the whole run; every process learns whether it got it,
    so a refused job stops everywhere at once."""
    with contextlib.ExitStack() as stack:
        error = None
        if job.is_main:
            try:
                stack.enter_context(run_lock(os.path.dirname(out), os.path.basename(out)))
            except FileExistsError as e:
                error = e
        if job.enabled and job.mean([float(error is not None)])[0] > 0 and error is None:
            error = FileExistsError(f"run {out} is in use by another process")
        if error is not None:
            raise error
        yield


def is_committed(folder):
    """True when git tracks files of this folder (a shipped run): never deleted by accident."""
    try:
        listed = subprocess.run(["git", "ls-files", "--", os.path.basename(os.path.abspath(folder))],
                                cwd=os.path.dirname(os.path.abspath(folder)), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and bool(listed.stdout.strip())


@contextlib.contextmanager
def open_run(job, model_cfg, train_cfg, resume=False, overwrite=False, force=False):
    """The run folder, locked while the block runs: checked (resume needs its checkpoint; a new
    run needs an empty or overwritable folder, and a committed run is overwritten only with
    force), then for a new run made afresh with its configs. A new folder that never got its
    first checkpoint (the data was missing, say) is removed again, so the next try starts clean."""
    out = run_dir(train_cfg)
    with _locked(job, out):
        if resume and not os.path.isfile(os.path.join(out, "checkpoint.pt")):
            raise FileNotFoundError(f"cannot resume: no checkpoint.pt in {out}")
        if resume and job.is_main:  # a save cut short by kill -9 leaves a checkpoint-sized temporary file
            tools.remove_orphaned_temps(out)
        if not resume:
            if os.path.exists(out) and os.listdir(out) and not overwrite:
                raise FileExistsError(f"run folder {out} already exists: resume it (--resume {out}), "
                                      "pick another --name, or pass --overwrite")
            if overwrite and not force and os.path.isdir(out) and is_committed(out):
                raise FileExistsError(f"run folder {out} is committed to the repository (a shipped model): "
                                      "--overwrite will not delete it; pick another --name, or add --force")
            job.barrier()  # every process has checked before rank 0 changes the folder
            if job.is_main:
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out, exist_ok=True)
                config.save_json(model_cfg, os.path.join(out, "model_config.json"))
                config.save_json(train_cfg, os.path.join(out, "train_config.json"))
        try:
            yield out
        except BaseException:
            if not resume and job.is_main and not os.path.exists(os.path.join(out, "checkpoint.pt")):
                shutil.rmtree(out, ignore_errors=True)
            raise


# --- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(out, model, optimizer, extra):
    """checkpoint.pt (weights, optimizer, `extra`: step, RNG states, ...) and model.safetensors,
    each with a digest checked on load: torch.load does not notice flipped bits."""
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}
    payload["sha256"] = tools.digest(payload)
    tools.atomic_save(lambda p: torch.save(payload, p), os.path.join(out, "checkpoint.pt"))
    tools.save_weights(model, os.path.join(out, "model.safetensors"), architecture(model.cfg))


def load_checkpoint(path, device):
    """torch.load with weights_only=True (tensors and plain containers only: a checkpoint can
    never run code), with a clear error for a damaged or foreign file."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict):
            raise ValueError(f"it holds a {type(ckpt).__name__}, not a dict")
        stored = ckpt.pop("sha256", None)  # checkpoints written before digests were kept have none
        if stored is not None and stored != tools.digest(ckpt):
            raise ValueError("its contents do not match the checksum saved with them")
        return ckpt
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it holds pickled Python objects, which are never loaded (weights_only=True)"
        raise ValueError(f"checkpoint {path} is damaged or not a checkpoint of this project: {reason}. "
                         "Train again (--overwrite), or restore the file from a backup") from None


def restore_checkpoint(out, model, optimizer, batch_rng, job, device):
    """Load out/checkpoint.pt into model, optimizer, the batch generator and this process's RNG
    states; truncate the log to its step; returns the rest of the checkpoint (the loop's state)."""
    path = os.path.join(out, "checkpoint.pt")
    ckpt = load_checkpoint(path, device)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        batch_rng.set_state(ckpt["batch_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path} does not fit the run's configs (model_config.json, "
                         f"train_config.json): {str(e).strip().splitlines()[0][:200]}") from None
    # every process's RNG states (checkpoints from before they were kept per process hold one)
    ranks = ckpt.get("rng_ranks") or [{"torch": ckpt["torch_rng"], "cuda": ckpt.get("cuda_rng")}]
    rng = ranks[job.rank] if len(ranks) == job.world else ranks[0]  # another job size: rank 0's
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"])
    if job.is_main:
        truncate_log(out, ckpt["step"])
    return {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "batch_rng", "rng_ranks",
                                                       "torch_rng", "cuda_rng")}


# --- the log ----------------------------------------------------------------------------------
def append_log(out, row):
    path = os.path.join(out, "log_data.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_log(out, last_step):
    """Keep only the complete log rows up to last_step: rows written after the checkpoint we
    resume from are written again, and a row cut short by a crash is dropped."""
    path = os.path.join(out, "log_data.csv")
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames

    def complete(row):
        return None not in row and all(v not in (None, "") for v in row.values()) and row["step"].isdigit()
    kept = [r for r in rows if complete(r) and int(r["step"]) <= last_step]
    if columns:
        tools.atomic_save(lambda p: _write_rows(p, columns, kept), path)


def _write_rows(path, columns, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


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


# --- several runs at once on one machine (studies) ----------------------------------------------
def worker_env(index, workers):
    """Environment of study worker `index` of `workers` on this machine: with GPUs, worker i
    takes GPU i mod their count (more workers than GPUs share them: a 1M-parameter run fills a
    few % of one); on the CPU each worker gets cores / workers threads, so they do not fight."""
    env = dict(os.environ)
    gpus = torch.cuda.device_count()
    if gpus:
        visible = env.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus)))).split(",")
        env["CUDA_VISIBLE_DEVICES"] = visible[index % len(visible)]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def tokens_logged(folders):
    """Tokens the logs of these run folders hold, in all (a run without a log yet counts 0)."""
    total = 0
    for folder in folders:
        with contextlib.suppress(FileNotFoundError, ValueError):
            total += int(read_log(folder)["tokens"].iloc[-1])
    return total


def run_workers(commands, folders, cwd=config.ROOT):
    """Run one process per command at once (worker_env(i, len(commands)) each) and wait for all;
    returns (exit codes, aggregate tokens/s: tokens the logs of folders() gained / wall-clock).
    folders() lists the study's run folders, asked before and after (workers may add some)."""
    before, start = tokens_logged(folders()), time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=cwd, env=worker_env(i, len(commands))) for i, cmd in enumerate(commands)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C reaches every worker too: wait for them to save
        codes = [p.wait() for p in procs]
        raise
    return codes, (tokens_logged(folders()) - before) / (time.perf_counter() - start)


# --- reading a finished run -------------------------------------------------------------------
def read_run(run_dir):
    """What a run folder reports, read once for its README and for the comparison table: the
    ModelConfig, log_data.csv (pandas, with its training `flops`), its last row, the row of
    lowest validation loss, and the parameter counts (total, non-embedding)."""
    cfg = config.load_json(config.ModelConfig, os.path.join(run_dir, "model_config.json"))
    log = read_log(run_dir)
    total, embedding = tools.count_parameters(build_model(cfg))
    if "flops" not in log:  # logs written before the column was kept
        log["flops"] = log["tokens"] * flops_per_token(total, cfg)
    return SimpleNamespace(model_cfg=cfg, log=log, last=log.iloc[-1], best=log.loc[log["val_loss"].idxmin()],
                           params=total, non_embedding_params=total - embedding)


def try_command(run_dir, train_cfg):
    """How to try a trained run: its dataset's try_command (TinyStories': sample a story)."""
    dataset = data.dataset_class(train_cfg.dataset)
    return getattr(dataset, "try_command", data.TinyStories.try_command).format(run=os.path.relpath(run_dir, config.ROOT))


def write_readme(run_dir, command=None):
    """trained/NAME/README.md: how the run was made and what it reached, from its own files."""
    run = read_run(run_dir)
    model_cfg, log, last, best = run.model_cfg, run.log, run.last, run.best
    train_cfg = config.load_json(config.TrainConfig, os.path.join(run_dir, "train_config.json"))
    dataset = data.dataset_class(train_cfg.dataset)
    data_source = dataset.origin(train_cfg) if hasattr(dataset, "origin") else train_cfg.data_dir or "its own source"
    text = f"""# {os.path.basename(run_dir)}

`{model_cfg.model_type}` model, {run.params:,} parameters ({run.non_embedding_params:,} non-embedding), tokenizer `{model_cfg.tokenizer}`,
context {model_cfg.max_seq_len}. Made with:

```bash
{command or "train(model_cfg, train_cfg)  # from Python; configs in this folder"}
```

| | |
|---|---|
| data | `{train_cfg.dataset}` from {data_source} |
| tokens seen | {int(last['tokens']):,} ({int(last['step'])} steps of batch {train_cfg.batch_size * train_cfg.grad_accum_steps}, context {model_cfg.max_seq_len}) |
| wall-clock | {last['elapsed_s'] / 60:.1f} min (median {log['tokens_per_s'].median():,.0f} tokens/s) |
| final validation loss | {last['val_loss']:.4f} nats/token (± {last['val_loss_se']:.4f} s.e. over windows), {last['val_bpc']:.4f} bits/char |
| best validation loss | {best['val_loss']:.4f} at step {int(best['step'])} ({best['val_bpc']:.4f} bits/char) |
| final train loss | {last['train_loss']:.4f} (mean since the previous evaluation, dropout on) |

Try it: `{try_command(run_dir, train_cfg)}`.
Files: `model_config.json`, `train_config.json`, `model.safetensors`, `log_data.csv` (one row per evaluation).
"""
    with open(os.path.join(run_dir, "README.md"), "w") as f:
        f.write(text)
