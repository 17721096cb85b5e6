"""Train a model: `train(model_cfg, train_cfg)` from a notebook, or the CLI over it.

    python train.py                                   # the llama_1m preset, into trained/my_llama_1m
    python train.py --preset gpt2_1m --name my_gpt2 --max_steps 300 --dim 96
    python train.py --resume trained/my_gpt2          # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node 4 train.py --preset llama_1m   # 4 GPUs (DDP; see distributed.py)

Writes trained/NAME/ (runs.py: model_config.json, train_config.json, model.safetensors,
log_data.csv with one row per evaluation, checkpoint.pt to resume, README.md).

`train` reads as its steps: check the job fits, open the run folder, build (seeded), restore
or write the first checkpoint, `fit`, finish. `fit` is the loop, nanoGPT's shape.
"""
import contextlib
import dataclasses
import math
import os
import signal
import sys
import time

import torch
from tqdm.auto import tqdm

import config
import data
import distributed
import inference
import metrics
import modules
import presets
import runs
import tools
import trackers
from modules import build_model, flops_per_token

LOG_COLUMNS = ["step", "tokens", "flops", "elapsed_s", "lr", "train_loss", "val_loss", "val_loss_se", "val_bpc",
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
    """AdamW, weight decay only on weight matrices not named in model.no_weight_decay(); with
    cfg.optimizer='muon', the weight matrices of the blocks' linear layers go to Muon instead
    (`muon_matrices`: a rule, not a list of names, so every architecture splits the same way)."""
    if cfg.optimizer == "muon" and not hasattr(torch.optim, "Muon"):
        raise ValueError(f"optimizer='muon' needs torch >= 2.9 (torch.optim.Muon); this is torch {torch.__version__}: "
                         "upgrade torch, or use optimizer='adamw'")
    skip = model.no_weight_decay()
    muon = muon_matrices(model) if cfg.optimizer == "muon" else set()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p not in muon]
    decay = [p for n, p in params if p.dim() >= 2 and n not in skip]
    no_decay = [p for n, p in params if p.dim() < 2 or n in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        adamw = torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu", "mps"), **kwargs)
    except (RuntimeError, TypeError):  # fused kernel unavailable for this device/build
        adamw = torch.optim.AdamW(groups, **kwargs)
    if not muon:
        return adamw
    matrices = [p for p in model.parameters() if p in muon]  # in the model's order: the same in every process
    return tools.Optimizers(adamw=adamw, muon=torch.optim.Muon(
        matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
        adjust_lr_fn="match_rms_adamw"))


def muon_matrices(model):
    """The parameters Muon orthogonalises: the weight of every nn.Linear whose output is not the
    vocabulary (an untied head) and whose matrix is at least 2 x 2. Embeddings, norms, biases
    and any other tensor (Memory Mosaics' slots, scalars) stay with AdamW."""
    vocab = model.cfg.vocab_size
    return {m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features != vocab
            and min(m.weight.shape) > 1 and m.weight.requires_grad}


# --- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, dataset, batch_size, device, use_autocast):
    """On the dataset's fixed validation batches: the mean next-token loss over windows, its
    standard error, and the mean of each extra loss term the model reports (over rows); for a
    dataset scored by accuracy (a capability probe, tasks.py), also `acc` and `acc_se` over rows."""
    was_training = model.training
    model.eval()
    losses, accuracies, terms_sum = [], [], {}
    for batch in dataset.val_batches(batch_size):
        scoring = {k: batch.pop(k) for k in getattr(dataset, "score_keys", ())}  # for the score, not the model
        batch = tools.to_device(batch, device)
        with tools.autocast(device, use_autocast):
            logits, _, terms = model(**batch)
        losses.append(metrics.window_losses(logits, batch["targets"]).cpu())
        if hasattr(dataset, "accuracy"):
            accuracies.append(dataset.accuracy(logits, {**batch, **scoring}).float().cpu())
        for name, value in terms.items():
            terms_sum[name] = terms_sum.get(name, 0.0) + float(value) * len(logits)
    model.train(was_training)
    losses = torch.cat(losses)
    extra = {name: total / len(losses) for name, total in terms_sum.items()}
    if accuracies:
        extra["acc"], extra["acc_se"] = metrics.mean_and_se(torch.cat(accuracies))
    return (*metrics.mean_and_se(losses), extra)


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (`kill`, `timeout`, a cluster scheduler before its SIGKILL) sets
    a flag; the loop stops after the current step and saves, so the checkpoint is consistent."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        try:
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: signals act as usual
            self.previous = {}
        return self

    def _handle(self, *_):
        if self.requested:  # a second signal stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *_):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# --- training -----------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainState:
    """What the loop carries from step to step; checkpointed under these keys. loss_sum,
    loss_count and terms_sum (the extra loss terms a model reports) run since the last evaluation."""
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    terms_sum: dict = dataclasses.field(default_factory=dict)
    command: str = ""  # the command that started the run: its README names it, not a later --resume


@dataclasses.dataclass
class Run:
    """What a training run works with, fixed once it is built."""
    model_cfg: config.ModelConfig
    train_cfg: config.TrainConfig
    job: distributed.Context
    device: torch.device
    out: str
    dataset: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch_rng: torch.Generator  # the data position: its state is checkpointed
    use_autocast: bool
    flops_per_token: float = 0.0  # training FLOPs per token (modules.sizing): the log's `flops` column, MFU
    step_model: torch.nn.Module = None  # the model as the loop calls it: compiled and/or DDP-wrapped
    on_eval: object = None
    tracker: object = None  # trackers.py: TensorBoard or wandb, on rank 0


def train(model_cfg, train_cfg, resume=False, overwrite=False, progress=True, command=None, on_eval=None,
          force=False):
    """Train model_cfg under train_cfg; returns the run folder. With resume=True, weights,
    optimizer, step, RNG states and data position come from the folder's checkpoint.pt
    (use `resume_run`, which also reads the folder's configs). overwrite=True replaces a run
    folder of the same name, except one committed to the repository (a shipped model) unless
    force=True as well. `command` (the one that started the run) is recorded in its README.md.
    on_eval(row) is called with every log row (a sweep's pruner may raise to stop the run there).
    Under torchrun every process calls this; see distributed.py."""
    presets.check(model_cfg, train_cfg)
    job = distributed.Context()
    device = job.start(tools.pick_device(train_cfg.device))
    try:
        check_job_fits(job, model_cfg, train_cfg, device)  # before the run folder is made
        repeatable = device.type == "cpu" and tools.compile_enabled(train_cfg.compile, device)
        with runs.open_run(job, model_cfg, train_cfg, resume, overwrite, force) as out, \
                tools.deterministic(repeatable), _StopRequest() as stop:  # a signal from here on saves
            run = build_run(model_cfg, train_cfg, job, device, out, on_eval)
            state = TrainState(**restore_state(run)) if resume else TrainState(command=command or "")
            run.step_model = wrap_model(run)
            announce(run, state, resume)
            if job.is_main:
                run.tracker = trackers.open_tracker(train_cfg.tracker, out, model_cfg, train_cfg, state.step)
            try:
                if not resume:  # from the first moment on, a crash can be resumed
                    save_checkpoint(run, state)
                fit(run, state, stop, progress)
            finally:
                if run.tracker is not None:
                    run.tracker.close()
            finish(run, state, command)
        job.barrier()  # nobody tears the process group down while another process still writes or talks
        return out
    finally:
        job.close()


def train_or_resume(model_cfg, train_cfg, progress=True, command=None):
    """A run that a study or benchmark owns (scaling.py, bench/speedrun.py): trained when new,
    resumed from its checkpoint when started, skipped when finished. Returns (folder, finished):
    not finished after Ctrl-C or SIGTERM (saved)."""
    out = runs.run_dir(train_cfg)
    state = runs.run_state(out, model_cfg, train_cfg)
    if state != "finished":
        train(model_cfg, train_cfg, resume=state == "started", progress=progress, command=command)
    return out, runs.run_state(out, model_cfg, train_cfg) == "finished"


def finish(run, state, command):
    """A run that reached max_steps gets its README.md, and says where it is."""
    if state.step == run.train_cfg.max_steps and run.job.is_main:
        runs.write_readme(run.out, state.command or command)
        shown = os.path.relpath(run.out) if not os.path.relpath(run.out).startswith("..") else run.out
        say(run, f"saved the run to {shown} (model.safetensors, log_data.csv, README.md); try it: "
            f"`{runs.try_command(run.out, run.train_cfg)}`")


def check_job_fits(job, model_cfg, train_cfg, device):
    job.check_batch(train_cfg.batch_size)
    tools.check_fits(modules.estimate_training_memory(model_cfg, train_cfg), device,
                     f"training (batch_size={train_cfg.batch_size}, max_seq_len={model_cfg.max_seq_len}, "
                     f"dim={model_cfg.dim}, num_layers={model_cfg.num_layers}, vocab_size={model_cfg.vocab_size})",
                     "lower batch_size (grad_accum_steps keeps the effective batch), max_seq_len, dim or num_layers")


def build_run(model_cfg, train_cfg, job, device, out, on_eval):
    """Dataset, model and optimizer, seeded: the same initial weights in every process, a
    different dropout stream per process."""
    dataset = data.get_dataset(model_cfg, train_cfg)
    tools.seed_everything(train_cfg.seed)
    model = build_model(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg, device)
    if job.enabled:
        torch.manual_seed(train_cfg.seed + job.rank)
    return Run(model_cfg, train_cfg, job, device, out, dataset, model, optimizer,
               torch.Generator().manual_seed(train_cfg.seed), tools.autocast_enabled(train_cfg.autocast, device),
               flops_per_token(tools.count_parameters(model)[0], model_cfg), on_eval=on_eval)


def restore_state(run):
    saved = runs.restore_checkpoint(run.out, run.model, run.optimizer, run.batch_rng, run.job, run.device)
    return {f.name: saved[f.name] for f in dataclasses.fields(TrainState) if f.name in saved}


def wrap_model(run):
    step_model = torch.compile(run.model) if tools.compile_enabled(run.train_cfg.compile, run.device) else run.model
    if run.job.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    return step_model


def announce(run, state, resume):
    total, embedding = tools.count_parameters(run.model)
    say(run, f"{run.model_cfg.model_type} '{run.train_cfg.name}': {total:,} parameters ({total - embedding:,} "
        f"non-embedding) on {run.device}, autocast={'bf16' if run.use_autocast else 'off'}, "
        f"compile={'on' if tools.compile_enabled(run.train_cfg.compile, run.device) else 'off'}, optimizer "
        f"{run.optimizer.describe() if isinstance(run.optimizer, tools.Optimizers) else 'adamw'}; {run.train_cfg.dataset}: "
        f"{run.dataset.describe()}" + (f"; {run.job.world} processes" if run.job.enabled else "")
        + (f"; resuming at step {state.step}" if resume else ""))


def say(run, message):
    if run.job.is_main:
        print(message)


def save_checkpoint(run, state):
    """Called by every process (the RNG states are gathered); rank 0 writes. Weights that are
    not finite are never written: the last good checkpoint stays."""
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        raise NonFiniteLoss(f"the weights stopped being finite at step {state.step}; the last good checkpoint in "
                            f"{run.out} is kept; try a lower --lr or --grad_clip")
    rng = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state() if run.device.type == "cuda" else None}
    extra = {"rng_ranks": run.job.gather(rng), "batch_rng": run.batch_rng.get_state(), **dataclasses.asdict(state)}
    if run.job.is_main:
        runs.save_checkpoint(run.out, run.model, run.optimizer, extra)


def fit(run, state, stop, progress=True):
    """The training loop: set the lr, accumulate gradients over micro-batches, stop on a
    non-finite loss or gradient, clip, step; evaluate and log every eval_interval steps,
    checkpoint every checkpoint_interval. Ctrl-C or SIGTERM (`stop`) ends it after the current
    step, saved."""
    cfg, job = run.train_cfg, run.job
    bar = tqdm(total=cfg.max_steps, initial=state.step, disable=not progress or not job.is_main, desc=cfg.name,
               dynamic_ncols=True)
    run.model.train()
    session_start, elapsed_before = time.time(), state.elapsed_s
    interval_tokens, interval_train_s, grad_norm = 0, 0.0, float("nan")
    stopping = False  # Ctrl-C or SIGTERM, agreed by every process at the same step (it arrives anywhere)
    while state.step < cfg.max_steps and not stopping:
        step_start = time.time()
        lr = lr_at(state.step, cfg)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        step_loss, step_terms, counted = forward_backward(run)
        state.tokens += counted
        interval_tokens += counted
        if job.enabled:  # one collective: the mean loss and terms, and whether any process got Ctrl-C
            step_loss, stop_flag, *values = job.mean([step_loss, float(stop.requested), *step_terms.values()])
            stopping, step_terms = stop_flag > 0, dict(zip(step_terms, values))
        else:
            stopping = stop.requested
        for name, value in step_terms.items():
            state.terms_sum[name] = state.terms_sum.get(name, 0.0) + value
        grad_norm = gradient_norm(run.model, cfg.grad_clip)
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            bar.close()
            raise NonFiniteLoss(f"{'loss' if not math.isfinite(step_loss) else 'gradient norm'} became "
                                f"{step_loss if not math.isfinite(step_loss) else grad_norm} at step {state.step}; "
                                "the run stopped before that step changed the weights. The last good checkpoint "
                                f"is {os.path.join(run.out, 'checkpoint.pt')}; try a lower --lr or --grad_clip")
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.loss_sum += step_loss
        state.loss_count += 1
        state.elapsed_s = elapsed_before + time.time() - session_start
        interval_train_s += time.time() - step_start
        bar.update(1)

        done = state.step == cfg.max_steps
        if state.step % cfg.eval_interval == 0 or done:
            if job.is_main:  # rank 0 alone evaluates and logs
                log_evaluation(run, state, lr, grad_norm, interval_tokens / max(interval_train_s, 1e-9), bar)
            state.loss_sum, state.loss_count, state.terms_sum = 0.0, 0, {}
            interval_tokens, interval_train_s = 0, 0.0
        if state.step % cfg.checkpoint_interval == 0 or done:
            save_checkpoint(run, state)
    bar.close()
    if stopping and state.step < cfg.max_steps:
        save_checkpoint(run, state)
        say(run, f"interrupted: saved step {state.step} to {run.out}; continue with "
            f"`python train.py --resume {run.out}`")


def forward_backward(run):
    """One optimizer step's gradients over grad_accum_steps micro-batches of the global batch:
    (mean loss, mean of each extra loss term, tokens counted)."""
    cfg, job = run.train_cfg, run.job
    step_loss, step_terms, counted = 0.0, {}, 0
    for micro in range(cfg.grad_accum_steps):
        batch = run.dataset.train_batch(cfg.batch_size, run.batch_rng)
        counted += run.dataset.batch_tokens(batch)
        last_micro = micro == cfg.grad_accum_steps - 1  # DDP syncs gradients only then
        with contextlib.nullcontext() if last_micro or not job.enabled else run.step_model.no_sync():
            with tools.autocast(run.device, run.use_autocast):
                _, loss, terms = run.step_model(**tools.to_device(job.share(batch), run.device))
            (loss / cfg.grad_accum_steps).backward()
        step_loss += loss.item() / cfg.grad_accum_steps
        for name, value in terms.items():
            step_terms[name] = step_terms.get(name, 0.0) + float(value) / cfg.grad_accum_steps
    return step_loss, step_terms, counted


def gradient_norm(model, clip):
    """The global gradient norm, clipped to `clip` when clip > 0 (inf or nan when a gradient is)."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item()
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]).item()


def log_evaluation(run, state, lr, grad_norm, tok_s, bar):
    """Evaluate, append a log_data.csv row, call on_eval, show it on the progress bar."""
    val_loss, val_se, val_terms = evaluate(run.model, run.dataset, run.train_cfg.batch_size, run.device,
                                           run.use_autocast)
    row = {"step": state.step, "tokens": state.tokens, "flops": state.tokens * run.flops_per_token,
           "elapsed_s": round(state.elapsed_s, 2), "lr": lr,
           "train_loss": state.loss_sum / state.loss_count, "val_loss": val_loss, "val_loss_se": val_se,
           "val_bpc": run.dataset.bits_per_char(val_loss), "tokens_per_s": round(tok_s, 1), "grad_norm": grad_norm,
           **{f"train_{k}": v / state.loss_count for k, v in state.terms_sum.items()},
           **{f"val_{k}": v for k, v in val_terms.items()}}
    runs.append_log(run.out, row)
    if run.on_eval is not None:
        run.on_eval(row)
    mfu = tools.estimate_mfu(run.flops_per_token, tok_s, run.device)
    if run.tracker is not None:
        run.tracker.log({**row, **({"mfu": mfu} if mfu else {})}, state.step)
        story = sample_story(run)
        if story is not None:
            run.tracker.text("sample", story, state.step)
    bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{val_loss:.3f}", bpc=f"{row['val_bpc']:.3f}",
                    lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}", **({"mfu": f"{mfu:.1%}"} if mfu else {}))


def sample_story(run, max_new_tokens=120):
    """A story the model writes from scratch (seeded, in eval mode: the training RNG streams are
    untouched), for the tracker; None for a model that reads more than a prompt (an encoder's
    source)."""
    if run.model.example_inputs(1):
        return None
    run.model.eval()
    try:
        return inference.generate(run.model, data.load_tokenizer(run.model_cfg.tokenizer), [""],
                                  max_new_tokens=max_new_tokens, temperature=0.8, min_p=0.05, seed=0)[0]
    finally:
        run.model.train()


def resume_run(run_dir, progress=True, command=None, data_dir=""):
    """Continue the run saved in run_dir from its checkpoint, with the configs stored there (the
    data folder: data_dir, else MMS_DATA_DIR, else the one stored; see runs.load_configs)."""
    run_dir = os.path.abspath(runs.find_run(run_dir.rstrip("/")))
    paths = [os.path.join(run_dir, f) for f in ("model_config.json", "train_config.json", "checkpoint.pt")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"cannot resume {run_dir}: missing {missing}")
    model_cfg, train_cfg = runs.load_configs(run_dir, data_dir)
    train_cfg.out_dir, train_cfg.name = os.path.dirname(run_dir), os.path.basename(run_dir)
    return train(model_cfg, train_cfg, resume=True, progress=progress, command=command)


def main(argv=None):
    parser = tools.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="llama_1m", help=f"one of {list(presets.PRESETS)} (default llama_1m)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run saved in this folder (a path, or a name under trained/)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name "
                        "(not a run committed to the repository: that also needs --force)")
    parser.add_argument("--force", action="store_true", help="with --overwrite: delete even a committed (shipped) run")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    config.add_config_arguments(parser)
    args = parser.parse_args(argv)
    command = "python train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    overrides = config.overrides_from_args(args)
    try:
        if args.resume:
            data_dir = overrides.pop("data_dir", "")  # where the same data lies on this machine
            if overrides:
                raise ValueError(f"--resume continues a run with the configs stored in it; "
                                 f"{', '.join('--' + k for k in overrides)} cannot change them (train a new run instead)")
            resume_run(args.resume, progress=not args.no_progress, command=command, data_dir=data_dir)
        else:
            model_cfg, train_cfg = presets.get_preset(args.preset, **overrides)
            train(model_cfg, train_cfg, overwrite=args.overwrite, progress=not args.no_progress, command=command,
                  force=args.force)
    except (*tools.USER_ERRORS, data.DataUnavailable, NonFiniteLoss) as e:
        tools.fail(e)


if __name__ == "__main__":
    main()
