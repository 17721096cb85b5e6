"""Train a model: `train(model_cfg, train_cfg)` from a notebook, or the CLI over it.

    python train.py                                   # the llama_1m preset
    python train.py --preset gpt2_1m --name my_gpt2 --max_steps 300 --dim 96
    python train.py --resume trained/my_gpt2          # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node 4 train.py --preset llama_1m   # 4 GPUs (DDP; see distributed.py)

Writes trained/NAME/: model_config.json, train_config.json, model.safetensors, log_data.csv
(one row per evaluation) and checkpoint.pt (resumable: weights, optimizer, step, RNG states).
"""
import contextlib
import csv
import math
import os
import shutil
import signal
import sys
import time

import torch
from tqdm.auto import tqdm

import config
import data
import distributed
import metrics
import tools
from modules import build_model

LOG_COLUMNS = ["step", "tokens", "elapsed_s", "lr", "train_loss", "val_loss", "val_loss_se", "val_bpc",
               "tokens_per_s", "grad_norm"]


class NonFiniteLoss(RuntimeError):
    pass


# --- learning-rate schedule ---------------------------------------------------------------------
def lr_at(step, cfg):
    """Learning rate for optimizer step `step` (0-based) under TrainConfig cfg."""
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "wsd":  # warmup, stable at lr, then linear decay over the last decay_steps
        decay_start = cfg.max_steps - cfg.decay_steps
        if step < decay_start:
            return cfg.lr
        progress = (step - decay_start + 1) / max(1, cfg.decay_steps)
        return cfg.lr + (min_lr - cfg.lr) * progress
    progress = (step - cfg.warmup_steps + 1) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.lr_schedule == "linear":
        return cfg.lr + (min_lr - cfg.lr) * progress
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * progress))  # cosine


def plot_lr_schedule(train_cfg, ax=None):
    """Plot the learning rate against step; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    steps = range(train_cfg.max_steps)
    ax.plot(steps, [lr_at(s, train_cfg) for s in steps])
    ax.set(xlabel="step", ylabel="learning rate", title=f"{train_cfg.lr_schedule} schedule")
    ax.grid(alpha=0.3)
    return ax


# --- optimizer ----------------------------------------------------------------------------------
def make_optimizer(model, cfg, device):
    """AdamW; weight decay only on weight matrices not named in model.no_weight_decay()."""
    skip = model.no_weight_decay()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and n not in skip]
    no_decay = [p for n, p in params if p.dim() < 2 or n in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu", "mps"), **kwargs)
    except (RuntimeError, TypeError):  # fused kernel unavailable for this device/build
        return torch.optim.AdamW(groups, **kwargs)


# --- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, dataset, batch_size, device, use_autocast):
    """On the dataset's fixed validation batches: the mean next-token loss over windows, its
    standard error, and the mean of each extra loss term the model reports (over rows)."""
    was_training = model.training
    model.eval()
    losses, terms_sum = [], {}
    for batch in dataset.val_batches(batch_size):
        batch = tools.to_device(batch, device)
        with tools.autocast(device, use_autocast):
            logits, _, terms = model(**batch)
        losses.append(metrics.window_losses(logits, batch["targets"]).cpu())
        for name, value in terms.items():
            terms_sum[name] = terms_sum.get(name, 0.0) + float(value) * len(logits)
    model.train(was_training)
    losses = torch.cat(losses)
    return (*metrics.mean_and_se(losses), {name: total / len(losses) for name, total in terms_sum.items()})


# --- run folder ---------------------------------------------------------------------------------
def _append_log(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_log(path, last_step):
    """Keep only the complete log rows up to last_step: rows written after the checkpoint we
    resume from are written again, and a row cut short by a crash is dropped."""
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


def _save_checkpoint(path, model, optimizer, state):
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **state}
    payload["sha256"] = tools.digest(payload)  # checked on load: torch.load does not notice flipped bits
    tools.atomic_save(lambda p: torch.save(payload, p), path)


# --- training -----------------------------------------------------------------------------------
class _StopRequest:
    """Ctrl-C sets a flag; the loop stops after the current step, so the checkpoint is consistent."""

    def __init__(self):
        self.requested, self.previous = False, None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C raises KeyboardInterrupt as usual
            self.previous = None
        return self

    def _handle(self, *_):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *_):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(model_cfg, train_cfg, resume=False, overwrite=False, progress=True, command=None, on_eval=None):
    """Train model_cfg under train_cfg; returns the run folder. With resume=True, weights,
    optimizer, step, RNG states and data position come from the folder's checkpoint.pt
    (use `resume_run`, which also reads the folder's configs). `command` is recorded in the
    run's README.md. on_eval(row) is called with every log row (a sweep's pruner may raise to
    stop the run there). Under torchrun every process calls this; see distributed.py."""
    job = distributed.Context()
    device = job.start(tools.pick_device(train_cfg.device))
    try:
        out = _train(model_cfg, train_cfg, resume, overwrite, progress, command, on_eval, job, device)
        job.barrier()  # nobody tears the process group down while another process still writes or talks
        return out
    finally:
        job.close()


@contextlib.contextmanager
def _locked(job, out):
    """Rank 0 holds the run's lock (tools.run_lock) for the whole run; every process learns
    whether it got it, so a refused job stops everywhere at once."""
    with contextlib.ExitStack() as stack:
        error = None
        if job.is_main:
            try:
                stack.enter_context(tools.run_lock(os.path.dirname(out), os.path.basename(out)))
            except FileExistsError as e:
                error = e
        if job.enabled and job.mean([float(error is not None)])[0] > 0 and error is None:
            error = FileExistsError(f"run {out} is in use by another process")
        if error is not None:
            raise error
        yield


def _load_checkpoint(path, device):
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


def _train(model_cfg, train_cfg, resume, overwrite, progress, command, on_eval, job, device):
    out = tools.run_dir(train_cfg)
    job.check_batch(train_cfg.batch_size)  # before the run folder is made
    tools.check_fits(tools.estimate_training_memory(model_cfg, train_cfg), device,
                     f"training (batch_size={train_cfg.batch_size}, max_seq_len={model_cfg.max_seq_len}, "
                     f"dim={model_cfg.dim}, num_layers={model_cfg.num_layers}, vocab_size={model_cfg.vocab_size})",
                     "lower batch_size (grad_accum_steps keeps the effective batch), max_seq_len, dim or num_layers")
    with _locked(job, out):
        return _train_locked(model_cfg, train_cfg, resume, overwrite, progress, command, on_eval, job, device, out)


def _train_locked(model_cfg, train_cfg, resume, overwrite, progress, command, on_eval, job, device, out):
    ckpt_path = os.path.join(out, "checkpoint.pt")
    log_path = os.path.join(out, "log_data.csv")
    if resume and not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"cannot resume: no checkpoint.pt in {out}")
    if not resume:
        if os.path.exists(out) and os.listdir(out):
            if not overwrite:
                raise FileExistsError(f"run folder {out} already exists: resume it (--resume {out}), "
                                      "pick another --name, or pass --overwrite")
        job.barrier()  # every process has checked before rank 0 changes the folder
        if job.is_main:
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out, exist_ok=True)
            config.save_json(model_cfg, os.path.join(out, "model_config.json"))
            config.save_json(train_cfg, os.path.join(out, "train_config.json"))
    use_autocast = tools.autocast_enabled(train_cfg.autocast, device)
    dataset = data.get_dataset(model_cfg, train_cfg)

    tools.seed_everything(train_cfg.seed)
    model = build_model(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg, device)
    if job.enabled:  # the same initial weights everywhere (seeded above), a different dropout stream per process
        torch.manual_seed(train_cfg.seed + job.rank)
    batch_rng = torch.Generator().manual_seed(train_cfg.seed)  # the data position: its state is checkpointed
    # loss_sum / terms_sum: running sums since the last evaluation (extra loss terms a model reports)
    state = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "loss_sum": 0.0, "loss_count": 0, "terms_sum": {}}
    if resume:
        ckpt = _load_checkpoint(ckpt_path, device)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            batch_rng.set_state(ckpt["batch_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise ValueError(f"checkpoint {ckpt_path} does not fit the run's configs (model_config.json, "
                             f"train_config.json): {str(e).strip().splitlines()[0][:200]}") from None
        # every process's RNG states (checkpoints from before they were kept per process hold one)
        ranks = ckpt.get("rng_ranks") or [{"torch": ckpt["torch_rng"], "cuda": ckpt.get("cuda_rng")}]
        rng = ranks[job.rank] if len(ranks) == job.world else ranks[0]  # another job size: rank 0's
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"])
        state.update({k: ckpt[k] for k in state if k in ckpt})
        if job.is_main:
            _truncate_log(log_path, state["step"])
    step_model = torch.compile(model) if tools.compile_enabled(train_cfg.compile, device) else model
    if job.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
    log = print if job.is_main else (lambda *a, **k: None)

    total, embedding = tools.count_parameters(model)
    log(f"{model_cfg.model_type} '{train_cfg.name}': {total:,} parameters ({total - embedding:,} non-embedding) "
        f"on {device}, autocast={'bf16' if use_autocast else 'off'}, "
        f"compile={'on' if step_model is not model else 'off'}; {train_cfg.dataset}: {dataset.describe()}"
        + (f"; {job.world} processes" if job.enabled else "")
        + (f"; resuming at step {state['step']}" if resume else ""))

    def save_checkpoint():  # called by every process (the RNG states are gathered); rank 0 writes
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
        extra = {"rng_ranks": job.gather(rng), "batch_rng": batch_rng.get_state(), **state}
        if job.is_main:
            _save_checkpoint(ckpt_path, model, optimizer, extra)
            tools.save_weights(model, os.path.join(out, "model.safetensors"))

    if not resume:  # from the first moment on, a crash can be resumed
        save_checkpoint()
    bar = tqdm(total=train_cfg.max_steps, initial=state["step"], disable=not progress or not job.is_main, desc=train_cfg.name,
               dynamic_ncols=True)
    model.train()
    session_start, elapsed_before = time.time(), state["elapsed_s"]
    interval_tokens, interval_train_s, grad_norm = 0, 0.0, float("nan")
    stopping = False  # Ctrl-C, agreed by every process at the same step (the signal arrives anywhere)
    with _StopRequest() as stop:
        while state["step"] < train_cfg.max_steps and not stopping:
            step_start = time.time()
            step = state["step"]
            lr = lr_at(step, train_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss, step_terms = 0.0, {}
            for micro in range(train_cfg.grad_accum_steps):
                batch = dataset.train_batch(train_cfg.batch_size, batch_rng)  # the global batch
                counted = dataset.batch_tokens(batch)
                state["tokens"] += counted
                interval_tokens += counted
                last_micro = micro == train_cfg.grad_accum_steps - 1  # DDP syncs gradients only then
                with contextlib.nullcontext() if last_micro or not job.enabled else step_model.no_sync():
                    with tools.autocast(device, use_autocast):
                        _, loss, terms = step_model(**tools.to_device(job.share(batch), device))
                    (loss / train_cfg.grad_accum_steps).backward()
                step_loss += loss.item() / train_cfg.grad_accum_steps
                for name, value in terms.items():
                    step_terms[name] = step_terms.get(name, 0.0) + float(value) / train_cfg.grad_accum_steps
            if job.enabled:  # one collective: the mean loss and terms, and whether any process got Ctrl-C
                step_loss, stop_flag, *values = job.mean([step_loss, float(stop.requested), *step_terms.values()])
                stopping, step_terms = stop_flag > 0, dict(zip(step_terms, values))
            else:
                stopping = stop.requested
            for name, value in step_terms.items():
                state["terms_sum"][name] = state["terms_sum"].get(name, 0.0) + value
            if not math.isfinite(step_loss):
                bar.close()
                raise NonFiniteLoss(f"loss became {step_loss} at step {step}; the run stopped there. "
                                    f"The last good checkpoint is {ckpt_path} (if one was written); "
                                    "try a lower --lr or --grad_clip")
            if train_cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["loss_sum"] += step_loss
            state["loss_count"] += 1
            state["elapsed_s"] = elapsed_before + time.time() - session_start
            interval_train_s += time.time() - step_start
            bar.update(1)

            done = state["step"] == train_cfg.max_steps
            evaluate_now = state["step"] % train_cfg.eval_interval == 0 or done
            if evaluate_now and job.is_main:  # rank 0 alone evaluates and logs
                tok_s = interval_tokens / max(interval_train_s, 1e-9)
                val_loss, val_se, val_terms = evaluate(model, dataset, train_cfg.batch_size, device, use_autocast)
                row = {"step": state["step"], "tokens": state["tokens"],
                       "elapsed_s": round(state["elapsed_s"], 2), "lr": lr,
                       "train_loss": state["loss_sum"] / state["loss_count"], "val_loss": val_loss,
                       "val_loss_se": val_se, "val_bpc": dataset.bits_per_char(val_loss),
                       "tokens_per_s": round(tok_s, 1), "grad_norm": grad_norm,
                       **{f"train_{k}": v / state["loss_count"] for k, v in state["terms_sum"].items()},
                       **{f"val_{k}": v for k, v in val_terms.items()}}
                _append_log(log_path, row)
                if on_eval is not None:
                    on_eval(row)
                mfu = tools.estimate_mfu(total, model_cfg, tok_s, device)
                bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{val_loss:.3f}", bpc=f"{row['val_bpc']:.3f}",
                                lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}", **({"mfu": f"{mfu:.1%}"} if mfu else {}))
            if evaluate_now:
                state["loss_sum"], state["loss_count"], state["terms_sum"] = 0.0, 0, {}
                interval_tokens, interval_train_s = 0, 0.0
            if state["step"] % train_cfg.checkpoint_interval == 0 or done:
                save_checkpoint()
        bar.close()
        if state["step"] == train_cfg.max_steps and job.is_main:
            write_run_readme(out, command)
        if stopping and state["step"] < train_cfg.max_steps:
            save_checkpoint()
            log(f"interrupted: saved step {state['step']} to {out}; continue with `python train.py --resume {out}`")
    return out


def write_run_readme(run_dir, command=None):
    """trained/NAME/README.md: how the run was made and what it reached, from its own files."""
    run = tools.read_run(run_dir)
    model_cfg, log, last, best = run.model_cfg, run.log, run.last, run.best
    train_cfg = config.load_json(config.TrainConfig, os.path.join(run_dir, "train_config.json"))
    data_source = train_cfg.data_dir or os.environ.get("MMS_DATA_DIR") or f"the Hugging Face hub ({data.HUB_DATASET})"
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

Sample: `python inference.py --model {os.path.relpath(run_dir, config.ROOT)} --prompt "Once upon a time"`.
Files: `model_config.json`, `train_config.json`, `model.safetensors`, `log_data.csv` (one row per evaluation).
"""
    with open(os.path.join(run_dir, "README.md"), "w") as f:
        f.write(text)


def resume_run(run_dir, progress=True, command=None):
    """Continue the run saved in run_dir from its checkpoint, with the configs stored there."""
    run_dir = os.path.abspath(run_dir.rstrip("/"))
    paths = [os.path.join(run_dir, f) for f in ("model_config.json", "train_config.json", "checkpoint.pt")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"cannot resume {run_dir}: missing {missing}")
    model_cfg = config.load_json(config.ModelConfig, paths[0])
    train_cfg = config.load_json(config.TrainConfig, paths[1])
    train_cfg.out_dir, train_cfg.name = os.path.dirname(run_dir), os.path.basename(run_dir)
    return train(model_cfg, train_cfg, resume=True, progress=progress, command=command)


def main(argv=None):
    parser = tools.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="llama_1m", help=f"one of {list(config.PRESETS)} (default llama_1m)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in this folder")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    config.add_config_arguments(parser)
    args = parser.parse_args(argv)
    command = "python train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if args.resume:
            resume_run(args.resume, progress=not args.no_progress, command=command)
        else:
            model_cfg, train_cfg = config.get_preset(args.preset, **config.overrides_from_args(args))
            train(model_cfg, train_cfg, overwrite=args.overwrite, progress=not args.no_progress, command=command)
    except (*tools.USER_ERRORS, data.DataUnavailable, NonFiniteLoss) as e:
        tools.fail(e)


if __name__ == "__main__":
    main()
