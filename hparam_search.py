"""Hyperparameter search on Optuna that skips what will not fit, resumable, in parallel.

    python hparam_search.py --study lr_width --preset llama_1m --trials 8 --tokens 3e6 \\
        --space lr=log:1e-3:3e-2 --space dim=choice:64,96,128 --set compile=off
    python hparam_search.py --study lr_width ... --trials 12      # the same command again: continues
    python hparam_search.py --study lr_width ... --workers 2      # two processes share the study

A trial is a normal run folder, trained/sweeps/STUDY/trial_NNNN (so model_comparison.py and
inference.py read it), trained on `tokens` tokens. Before a trial is built, its memory is
estimated (`modules.estimate_training_memory`) and compared with the device's free memory (CUDA) or a limit
(CPU: 80% of the machine's available memory unless --memory_limit_gb); a config over it is
pruned with the estimate in the trial's attributes. A config the sandbox rejects (heads not
dividing dim, ...) is pruned with the config's own message. Each trial then trains in a child
process (on a CPU under that memory limit), reporting validation loss at every evaluation to
Optuna's median pruner; a real out-of-memory error prunes the trial, any other error fails it,
and neither stops the study. The objective is the final validation loss (bits per character
when the space varies the tokenizer).

Storage: an SQLite file trained/sweeps/STUDY/study.db (one process; a crashed search resumes
from its trials, and a trial left running by the crash is retried), or with --workers > 1 an
Optuna journal file (safe for several processes; on a machine with GPUs each worker gets one).
At the end: summary.md (every trial), history.png and params.png next to the trials.
"""
import argparse
import glob
import json
import math
import os
import resource
import subprocess
import sys

import config
import presets
import runs

SWEEPS = os.path.join(config.ROOT, "trained", "sweeps")
OOM_EXIT = 3  # a trial's child process exits with this after an out-of-memory error
PRUNED_EXIT = 4  # ... and with this when the median pruner stopped it


# --- search space -------------------------------------------------------------------------
def parse_space(items):
    """["lr=log:1e-3:3e-2", "dim=choice:64,96", "warmup_frac=float:0:0.1", "num_layers=int:2:6"] ->
    {name: (kind, args)}; names must be ModelConfig / TrainConfig fields."""
    space = {}
    fields = {f.name: f for cls in (config.ModelConfig, config.TrainConfig) for f in config._fields(cls)}
    for item in items:
        name, _, spec = item.partition("=")
        kind, _, rest = spec.partition(":")
        if name not in fields:
            raise ValueError(f"--space {item!r}: {name!r} is not a ModelConfig or TrainConfig field")
        try:
            if kind in ("log", "float", "int"):
                low, high = (float(v) for v in rest.split(":"))
                if not (math.isfinite(low) and math.isfinite(high)):
                    raise ValueError
                if kind == "int":
                    low, high = int(low), int(high)
                if not low < high or (kind == "log" and low <= 0):
                    raise ValueError
                space[name] = (kind, (low, high))
            elif kind == "choice":
                convert = {"int": int, "float": float, "bool": config._parse_bool}.get(
                    fields[name].type if isinstance(fields[name].type, str) else fields[name].type.__name__, str)
                space[name] = ("choice", [convert(v) for v in rest.split(",") if v != ""])
                if not space[name][1]:
                    raise ValueError
            else:
                raise ValueError
        except (ValueError, TypeError, argparse.ArgumentTypeError):  # the last from config._parse_bool
            raise ValueError(f"--space {item!r} is invalid: use NAME=log:LOW:HIGH (LOW > 0), NAME=float:LOW:HIGH or "
                             "NAME=int:LOW:HIGH (finite numbers, LOW < HIGH), or NAME=choice:A,B,...") from None
    return space


def suggest(trial, space):
    """The trial's overrides: one value per field of the space."""
    values = {}
    for name, (kind, args) in space.items():
        if kind == "choice":
            values[name] = trial.suggest_categorical(name, args)
        elif kind == "int":
            values[name] = trial.suggest_int(name, *args)
        else:
            values[name] = trial.suggest_float(name, *args, log=kind == "log")
    return values


# --- memory -------------------------------------------------------------------------------
def default_memory_limit(device):
    """Bytes available for a trial: free CUDA memory, else 80% of the machine's available memory."""
    import tools
    free = tools.free_memory(device)
    return free if device.type == "cuda" else int(0.8 * free)


# --- one trial ----------------------------------------------------------------------------
def trial_configs(preset, base_overrides, values, tokens, study_dir, number):
    """(ModelConfig, TrainConfig) of a trial: the preset, the fixed overrides, the trial's values,
    max_steps from the token budget and the run folder STUDY_DIR/trial_NNNN."""
    model_cfg, train_cfg = presets.get_preset(preset, recipe=False, **{**base_overrides, **values})
    steps = max(1, math.ceil(tokens / (train_cfg.batch_size * train_cfg.grad_accum_steps * model_cfg.max_seq_len)))
    return presets.get_preset(preset, recipe=False, **{**base_overrides, **values, "max_steps": steps,
                                        "out_dir": study_dir, "name": f"trial_{number:04d}"})


def run_trial_child(args):
    """In the child process: train one trial, reporting each validation loss to Optuna."""
    import optuna
    import torch
    import train
    study = optuna.load_study(study_name=args.study, storage=make_storage(args.study_dir, args.storage))
    trial = optuna.trial.Trial(study, args.trial_id)
    model_cfg = config.from_dict(config.ModelConfig, json.loads(args.model_cfg))
    train_cfg = config.from_dict(config.TrainConfig, json.loads(args.train_cfg))

    def report(row):
        trial.report(row[args.objective], row["step"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"median pruner at step {row['step']}")
    try:
        train.train(model_cfg, train_cfg, overwrite=True, progress=False, on_eval=report)
    except optuna.TrialPruned as e:
        print(e, file=sys.stderr)
        sys.exit(PRUNED_EXIT)
    except (MemoryError, torch.cuda.OutOfMemoryError) as e:
        print(f"out of memory: {e}", file=sys.stderr)
        sys.exit(OOM_EXIT)
    except RuntimeError as e:
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
            print(f"out of memory: {e}", file=sys.stderr)
            sys.exit(OOM_EXIT)
        raise


def objective_for(space):
    """Validation bits per character when the tokenizer varies (losses per token would not compare)."""
    return "val_bpc" if "tokenizer" in space else "val_loss"


class Objective:
    def __init__(self, args, space, memory_limit):
        self.args, self.space, self.memory_limit = args, space, memory_limit

    def __call__(self, trial):
        import optuna
        import pandas as pd
        import modules
        import tools
        args = self.args
        values = suggest(trial, self.space)
        try:
            model_cfg, train_cfg = trial_configs(args.preset, args.fixed, values, args.tokens, args.study_dir,
                                                 trial.number)
        except ValueError as e:  # the sandbox's own message, e.g. "num_q_heads=3 is invalid: ..."
            trial.set_user_attr("error", str(e))
            raise optuna.TrialPruned(f"invalid config: {e}")
        estimate = modules.estimate_training_memory(model_cfg, train_cfg)
        trial.set_user_attr("memory_estimate_gb", round(estimate / 2**30, 3))
        trial.set_user_attr("run", os.path.relpath(os.path.join(train_cfg.out_dir, train_cfg.name), config.ROOT))
        if estimate > self.memory_limit:
            trial.set_user_attr("error", f"estimated {estimate / 2**30:.2f} GiB > limit {self.memory_limit / 2**30:.2f} GiB")
            raise optuna.TrialPruned("over the memory limit; not built")
        command = [sys.executable, os.path.abspath(__file__), "--_child", "--study", args.study, "--storage", args.storage,
                   "--study_dir", args.study_dir,
                   "--trial_id", str(trial._trial_id), "--objective", objective_for(self.space),
                   "--model_cfg", json.dumps(config.to_dict(model_cfg)), "--train_cfg", json.dumps(config.to_dict(train_cfg))]
        limit = int(self.memory_limit + args.child_overhead_gb * 2**30)

        def cap_memory():  # CPU: the child's private writable memory may not grow past the limit (RLIMIT_DATA,
            # not RLIMIT_AS: a CUDA build of torch maps gigabytes of library address space just to import)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        on_cpu = tools.pick_device(train_cfg.device).type == "cpu"  # the trial's device, not the machine's
        done = subprocess.run(command, cwd=config.ROOT, capture_output=True, text=True,
                              preexec_fn=cap_memory if on_cpu else None)
        if done.returncode == PRUNED_EXIT:
            raise optuna.TrialPruned(done.stderr.strip().splitlines()[-1])
        if done.returncode == OOM_EXIT or (done.returncode != 0 and _looks_like_oom(done.stderr)):
            trial.set_user_attr("error", "out of memory while training")
            raise optuna.TrialPruned("out of memory")
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            trial.set_user_attr("error", tail[0][:300])
            raise RuntimeError(f"trial {trial.number} failed: {tail[0][:300]}")
        log = pd.read_csv(os.path.join(train_cfg.out_dir, train_cfg.name, "log_data.csv"))
        return float(log[objective_for(self.space)].iloc[-1])


def _looks_like_oom(stderr):
    text = stderr.lower()
    return any(s in text for s in ("memoryerror", "out of memory", "cannot allocate memory", "bad_alloc"))


# --- study --------------------------------------------------------------------------------
def make_storage(folder, kind):
    """Optuna storage in a study's folder: 'sqlite' (one process) or 'journal' (several)."""
    import optuna
    os.makedirs(folder, exist_ok=True)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(os.path.join(folder, "study.journal")))
    return f"sqlite:///{os.path.join(folder, 'study.db')}"


def open_study(study, storage_kind, folder=None, retry_running=True, worker=0):
    """Create or load the study (in trained/sweeps/STUDY unless folder); with retry_running, trials
    a crash left RUNNING are failed and their parameters queued again. The sampler's seed is the
    worker's index and the trials already held, so neither parallel workers nor a resumed study
    draw the same values again (one fixed seed repeats its first random draws in every process)."""
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(folder or os.path.join(SWEEPS, study), storage_kind)
    study_obj = optuna.create_study(study_name=study, storage=storage, direction="minimize",
                                    load_if_exists=True, pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    study_obj.sampler = optuna.samplers.TPESampler(seed=len(study_obj.trials) + 10_000 * worker)
    for t in study_obj.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if retry_running else []:
        study_obj._storage.set_trial_user_attr(t._trial_id, "error", "interrupted; retried")
        study_obj._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study_obj.enqueue_trial(t.params, skip_if_exists=False)
    return study_obj


def finished(study_obj):
    from optuna.trial import TrialState
    return [t for t in study_obj.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def search(study, preset, space, trials, tokens, fixed=None, workers=1, memory_limit_gb=None, storage=None,
           child_overhead_gb=4.0, progress=True):
    """Run (or continue) a study until it holds `trials` finished trials; returns the Optuna study.
    space: {field: (kind, args)} as parse_space returns; fixed: overrides for every trial."""
    import torch
    import tools
    config.check_folder_name("study", study)
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials={trials!r} is invalid: must be a positive integer")
    max_workers = max(os.cpu_count() or 1, torch.cuda.device_count())
    if not isinstance(workers, int) or not 1 <= workers <= max_workers:
        raise ValueError(f"workers={workers!r} is invalid: must be an integer from 1 to {max_workers} "
                         "(at most one per CPU core or GPU)")
    if storage not in (None, "sqlite", "journal"):
        raise ValueError(f"storage={storage!r} is invalid: must be None, 'sqlite' or 'journal'")
    limits = [("tokens", tokens, 1e15)] + ([("memory_limit_gb", memory_limit_gb, 1e6)] if memory_limit_gb is not None else [])
    for name, value, high in limits:
        if not (isinstance(value, (int, float)) and 0 < value <= high):  # also refuses NaN
            raise ValueError(f"{name}={value!r} is invalid: must be a number > 0 and <= {high:g}")
    storage = storage or ("journal" if workers > 1 else "sqlite")
    space = parse_space(space) if isinstance(space, (list, tuple)) else space
    presets.get_preset(preset, recipe=False, **(fixed or {}))  # the fixed part must be valid on its own
    device = tools.pick_device((fixed or {}).get("device", "auto"))
    limit = int(memory_limit_gb * 2**30) if memory_limit_gb is not None else default_memory_limit(device)
    args = argparse.Namespace(study=study, preset=preset, fixed=fixed or {}, tokens=tokens, storage=storage,
                              child_overhead_gb=child_overhead_gb, study_dir=os.path.join(SWEEPS, study))
    study_obj = open_study(study, storage, args.study_dir)
    remaining = trials - len(finished(study_obj))
    if remaining > 0 and workers > 1:
        per_worker = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        commands = []
        for i, n in enumerate(w for w in per_worker if w):
            commands.append([sys.executable, os.path.abspath(__file__), "--_worker", "--study", study, "--preset", preset,
                   "--study_dir", os.path.join(SWEEPS, study), "--worker", str(i),
                   "--trials", str(n), "--tokens", str(tokens), "--storage", storage,
                   "--fixed_json", json.dumps(fixed or {}), "--space_json", json.dumps(space),
                   "--memory_limit_gb", str(limit / 2**30 / workers), "--child_overhead_gb", str(child_overhead_gb)])
        _, tokens_per_s = runs.run_workers(commands, lambda: glob.glob(os.path.join(args.study_dir, "trial_*")))
        print(f"{len(commands)} workers: {tokens_per_s:,.0f} tokens/s in all")
    elif remaining > 0:
        study_obj.optimize(Objective(args, space, limit), n_trials=remaining, catch=(RuntimeError,),
                           show_progress_bar=progress)
    write_summary(study_obj, args.study_dir)
    return study_obj


def write_summary(study_obj, folder):
    """summary.md (every trial, best first) and history.png / params.png in the study's folder."""
    import matplotlib.pyplot as plt
    import optuna
    study = study_obj.study_name
    table = summary_table(study_obj)
    with open(os.path.join(folder, "summary.md"), "w") as f:
        f.write(f"# Study {study}\n\n{to_markdown(table)}\n")
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study_obj.trials):
        for name, figure in zip(("history.png", "params.png"), study_figures(study_obj, table)):
            figure.savefig(os.path.join(folder, name), dpi=110, bbox_inches="tight")
        plt.close("all")
    return table


def study_figures(study_obj, table=None):
    """(history, params) figures of a study with finished trials, its objective named with units."""
    import optuna
    table = summary_table(study_obj) if table is None else table
    space = [t for t in study_obj.trials if t.state == optuna.trial.TrialState.COMPLETE][-1].distributions
    label = {"val_bpc": "final validation loss, bits/char", "val_loss": "final validation loss, nats/token"}[
        objective_for(space)]
    log_params = {name for name, d in space.items() if getattr(d, "log", False)}
    return plot_history(table, label), plot_params(table, sorted(space), label, log_params)


def plot_history(table, label):
    """Each finished trial's objective (summary_table rows) in the order run, and the best so far."""
    import matplotlib.pyplot as plt
    done = table[table["state"] == "COMPLETE"].sort_values("trial")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(done["trial"], done["objective"], "o", color="tab:blue", markeredgecolor="black", label="trial")
    ax.step(done["trial"], done["objective"].cummin(), where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=label, title="optimisation history (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_params(table, params, label, log_params=()):
    """The objective against each parameter (log axis for `log_params`); dots coloured by trial
    number, with a colour bar only when there are enough trials for order to matter."""
    import matplotlib.pyplot as plt
    done = table[table["state"] == "COMPLETE"]
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params) + 1, 4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], params):
        x = done[name] if all(isinstance(v, (int, float)) for v in done[name]) else done[name].astype(str)
        dots = ax.scatter(x, done["objective"], c=done["trial"], cmap="viridis", edgecolors="black", s=45)
        if name in log_params:
            ax.set_xscale("log")
        ax.set(xlabel=name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(label)
    if len(done) >= 3:
        fig.colorbar(dots, ax=axes[0].tolist(), label="trial")
    fig.suptitle("objective against each parameter (lower is better)")
    return fig


def summary_table(study_obj):
    """A pandas DataFrame: one row per trial, finished ones by objective."""
    import pandas as pd
    rows = []
    for t in study_obj.trials:
        rows.append({"trial": t.number, "state": t.state.name, **t.params, "objective": t.value,
                     "memory_estimate_gb": t.user_attrs.get("memory_estimate_gb"),
                     "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                     "run": t.user_attrs.get("run", ""), "note": t.user_attrs.get("error", "")})
    table = pd.DataFrame(rows)
    return table.sort_values("objective", na_position="last").reset_index(drop=True) if len(table) else table


def to_markdown(table):
    """The study's table in markdown (4 significant digits; blank where a trial has no value)."""
    import tools
    return tools.markdown_table(table, float_format="{:.4g}")


def main(argv=None):
    import tools
    p = tools.ArgumentParser(description=__doc__)
    p.add_argument("--study", required=True, help="study name: trained/sweeps/STUDY holds it")
    p.add_argument("--preset", default="llama_1m")
    p.add_argument("--space", action="append", default=[], help="NAME=log:LOW:HIGH | float:.. | int:.. | choice:A,B (repeat)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a fixed override for every trial")
    p.add_argument("--trials", type=int, default=8, help="finished trials the study should hold")
    p.add_argument("--tokens", type=float, default=1e6, help="training tokens per trial")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the study (one per GPU on a GPU machine)")
    p.add_argument("--memory_limit_gb", type=float, default=None, help="skip configs estimated above this (default: the device's free memory)")
    p.add_argument("--storage", choices=("sqlite", "journal"), default=None)
    p.add_argument("--child_overhead_gb", type=float, default=4.0, help=argparse.SUPPRESS)
    for hidden in ("--_child", "--_worker"):
        p.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--trial_id", "--objective", "--model_cfg", "--train_cfg", "--fixed_json", "--space_json",
                   "--study_dir", "--worker"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        args.trial_id = int(args.trial_id)
        return run_trial_child(args)
    try:
        if args._worker:
            space = {k: tuple(v) for k, v in json.loads(args.space_json).items()}
            fixed = json.loads(args.fixed_json)
            study_obj = open_study(args.study, args.storage, args.study_dir, retry_running=False,
                                   worker=int(args.worker))
            run_args = argparse.Namespace(study=args.study, preset=args.preset, fixed=fixed, tokens=args.tokens,
                                          storage=args.storage, child_overhead_gb=args.child_overhead_gb,
                                          study_dir=args.study_dir)
            study_obj.optimize(Objective(run_args, space, int(args.memory_limit_gb * 2**30)), n_trials=args.trials,
                               catch=(RuntimeError,))
            return
        if not args.space:
            raise ValueError("give at least one --space NAME=KIND:... (e.g. --space lr=log:1e-3:3e-2)")
        fixed = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r} is invalid: use NAME=VALUE")
            fixed[name] = parse_space([f"{name}=choice:{value}"])[name][1][0]
        study_obj = search(args.study, args.preset, args.space, args.trials, args.tokens, fixed, args.workers,
                           args.memory_limit_gb, args.storage)
    except tools.USER_ERRORS as e:
        tools.fail(e)
    print(to_markdown(summary_table(study_obj)))
    print(f"\nwrote {os.path.join(SWEEPS, args.study)}: summary.md, history.png, params.png")


if __name__ == "__main__":
    main()
