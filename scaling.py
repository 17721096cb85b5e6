"""Scaling studies: does an architecture's gain over the baseline grow or shrink with scale?

    python scaling.py --study cpu --presets llama_1m ff_1m mm_1m --sizes 0.1M 0.2M 0.4M --seeds 1 2 \
        --tokens_per_param 10 --out comparison/scaling

Every (preset, size, seed) is trained as a normal run folder, trained/scaling/STUDY/PRESET_SIZE_sSEED,
at `presets.get_preset(preset, size=...)` with `tokens_per_param` x its non-embedding parameters
as the token budget (the whole cosine schedule fitted to it). A finished run is skipped and an
interrupted one resumed, so a study is restarted by running the same command again, and split
over machines with --shard I/N (one process each, then once with --no_train to report), or over
processes on one machine with --workers N (a 1M-parameter run fills a few % of a GPU; on the CPU
each worker gets cores / N threads), which also prints the aggregate tokens/s.

The report (summary.md, scaling.png) fits, per architecture, its runs' final validation loss
against their training FLOPs C (modules.sizing):

    L(C) = E + A * C^-alpha

and states the compute multiplier of every architecture at every size: the compute the first
preset (the baseline) would need, on its fitted curve, to reach that architecture's loss, divided
by the compute the architecture used (above 1: the architecture is worth that many times the
baseline's compute). Confidence intervals resample the seeds of every (architecture, size) cell
with replacement (bootstrap); `alpha - alpha_baseline` says whether the gain grows with scale.
"""
import fcntl
import json
import math
import os
import sys

import numpy

import config
import data
import presets
import tools
import runs
from runs import TRAINED, read_run
from train import NonFiniteLoss, train_or_resume

STUDIES = os.path.join(TRAINED, "scaling")
STUDY_FIELDS = ("name", "out_dir", "seed", "max_steps", "eval_interval", "checkpoint_interval")  # the plan's


# --- the plan: which runs a study holds ------------------------------------------------------------
def check_grid(study, **axes):
    """ValueError unless the study's name is a folder name and every axis of its grid ({name:
    values}) holds at least one value, each once."""
    config.check_folder_name("study", study)
    for name, values in axes.items():
        if not values or len(set(map(str, values))) != len(values):
            raise ValueError(f"{name}={list(values)!r} is invalid: give at least one, each once")


def plan(study, preset_names, sizes, seeds, tokens_per_param=10.0, overrides=None, folder=STUDIES):
    """[(model_cfg, train_cfg, cell)] for every preset x size x seed, cell = {"preset", "size",
    "seed"}: the run FOLDER/STUDY/PRESET_SIZE_sSEED (FOLDER: trained/scaling) with max_steps set so the run sees
    about tokens_per_param tokens per non-embedding parameter (at least one step), and five
    evaluations. `overrides` are further config fields for every run (e.g. device, batch_size)."""
    check_grid(study, presets=preset_names, sizes=sizes, seeds=seeds)
    if not isinstance(tokens_per_param, (int, float)) or not 0 < tokens_per_param <= 1e6:
        raise ValueError(f"tokens_per_param={tokens_per_param!r} is invalid: must be a number in (0, 1e6]")
    planned = []
    for seed in seeds:  # seed-major: a study stopped half-way already covers every cell once
        for preset in preset_names:
            for size in sizes:
                kw = dict(overrides or {}, seed=seed, out_dir=os.path.join(folder, study),
                          name=f"{preset}_{size}_s{seed}")
                model_cfg, train_cfg = presets.get_preset(preset, size=size, recipe=False, **kw)
                tokens_per_step = train_cfg.batch_size * train_cfg.grad_accum_steps * model_cfg.max_seq_len
                budget = tokens_per_param * presets.non_embedding_params(model_cfg)
                steps = max(1, round(budget / tokens_per_step))
                interval = max(1, steps // 5)  # five evaluations: a curve, at a fraction of the training cost
                model_cfg, train_cfg = presets.get_preset(preset, size=size, recipe=False, **{
                    "max_steps": steps, "eval_interval": interval, "checkpoint_interval": interval, **kw})
                planned.append((model_cfg, train_cfg, {"preset": preset, "size": str(size), "seed": seed}))
    return planned


def run_study(planned, shard=(0, 1), progress=True, script="scaling.py"):
    """Train the runs of `plan` that are this shard's (every N-th, from the I-th) and not finished;
    an interrupted run resumes from its checkpoint. A run folder made with other configs than the
    plan's is refused (name another study). A run whose loss stops being finite is reported and
    left out, and the study goes on. Returns the finished run folders of this shard. `script` is the
    study's command (scaling.py, probes.py), recorded in each run's README."""
    index, count = shard
    folders, failed = [], []
    for i, (model_cfg, train_cfg, cell) in enumerate(planned):
        if i % count != index:
            continue
        _record(train_cfg.out_dir, train_cfg.name, cell)
        if progress and runs.run_state(runs.run_dir(train_cfg), model_cfg, train_cfg) != "finished":
            print(f"[{i + 1}/{len(planned)}] {train_cfg.name}")
        try:
            folder, finished = train_or_resume(model_cfg, train_cfg, progress, command=(
                f"python {script} --study {os.path.basename(train_cfg.out_dir)} (run {train_cfg.name})"))
        except NonFiniteLoss as e:
            print(f"{train_cfg.name} failed and is left out of the report: {e}")
            failed.append(train_cfg.name)
            continue
        if not finished:  # Ctrl-C or SIGTERM: saved, stop here
            raise KeyboardInterrupt(f"the study stopped during {train_cfg.name}, saved; run the same "
                                    "command again to go on where it stopped")
        folders.append(folder)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (a lower --lr may help; rerun to retry them)")
    return folders


def _record(study_dir, name, cell):
    """study.json: which cell of the grid every run of the study is (what the report groups by).
    Read, updated and written under a lock: workers and shards record their runs at once."""
    path = os.path.join(study_dir, "study.json")
    os.makedirs(study_dir, exist_ok=True)
    with open(os.path.join(study_dir, ".study.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        cells = _read_cells(path) if os.path.isfile(path) else {}
        if cells.get(name) != cell:
            cells[name] = cell

            def write(tmp):
                with open(tmp, "w") as f:
                    json.dump(cells, f, indent=1)
            tools.atomic_save(write, path)


def _read_cells(path):
    with open(path) as f:
        return json.load(f)


# --- reading a study -------------------------------------------------------------------------------
def collect(study_dir):
    """One row per finished run of a study (pandas): preset, size, seed, non_embedding_params,
    tokens, epochs (tokens / the training split's tokens), flops and the final val_loss."""
    import pandas as pd
    path = os.path.join(study_dir, "study.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {study_dir} is not a scaling study (run `python scaling.py "
                                f"--study {os.path.basename(study_dir)} ...` first)")
    rows, train_tokens = [], {}
    for name, cell in _read_cells(path).items():
        folder = os.path.join(study_dir, name)
        if not os.path.isfile(os.path.join(folder, "README.md")):
            continue  # not finished: the report covers finished runs only
        run = read_run(folder)
        train_cfg = config.load_json(config.TrainConfig, os.path.join(folder, "train_config.json"))
        key = (run.model_cfg.tokenizer, train_cfg.dataset, train_cfg.data_dir)
        if key not in train_tokens:  # epochs need the training split; without it here they are unknown (nan)
            try:
                train_tokens[key] = len(data.get_dataset(run.model_cfg, train_cfg).train_data.tokens)
            except (AttributeError, data.DataUnavailable, FileNotFoundError, ValueError):
                train_tokens[key] = math.nan
        rows.append({"run": name, **cell, "non_embedding_params": run.non_embedding_params,
                     "tokens": int(run.last["tokens"]), "epochs": run.last["tokens"] / train_tokens[key],
                     "flops": float(run.last["flops"]), "val_loss": float(run.last["val_loss"]),
                     **{k: float(run.last[k]) for k in ("val_acc", "val_acc_se") if k in run.last}})
    if not rows:
        raise ValueError(f"{study_dir} holds no finished run yet: train the study first")
    return pd.DataFrame(rows)


# --- the power law and the compute multiplier ---------------------------------------------------------
def fit_power_law(flops, losses):
    """(E, A, alpha) of L = E + A * C^-alpha fitted by least squares to points (C, L), with E >= 0,
    A > 0 and 0 < alpha <= 3. For a given alpha the model is linear in E and A, so they are solved
    exactly and only alpha is searched (a grid, then scipy's bounded minimiser): no starting guess
    to get wrong, and fast enough to bootstrap. With fewer than three distinct C, E is fixed at 0
    (a pure power law: two compute budgets cannot fix three numbers)."""
    from scipy.optimize import minimize_scalar
    c, y = numpy.asarray(flops, dtype=float), numpy.asarray(losses, dtype=float)
    if len(numpy.unique(c)) < 2:
        raise ValueError("a power law needs runs at two or more compute budgets (sizes)")
    centre = numpy.log(c).mean()
    u = numpy.log(c) - centre  # centred log-compute: well-conditioned at any scale of C
    if len(numpy.unique(c)) < 3:
        slope, intercept = numpy.polyfit(u, numpy.log(y), 1)
        return 0.0, float(math.exp(intercept + -slope * centre)), float(-slope)

    def solve(alpha):
        """(squared error, E, a) at each alpha (array): least squares of y = E + a*exp(-alpha*u)."""
        z = numpy.exp(-numpy.multiply.outer(alpha, u))
        n, sz, szz, sy, szy = len(u), z.sum(-1), (z * z).sum(-1), y.sum(), z @ y
        e = (szz * sy - sz * szy) / (n * szz - sz * sz)
        a = (szy - e * sz) / szz
        clamp = e < 0  # the floor cannot be negative: refit with E = 0
        e, a = numpy.where(clamp, 0.0, e), numpy.where(clamp, szy / szz, a)
        error = ((e[..., None] + a[..., None] * z - y) ** 2).sum(-1)
        return numpy.where(a > 0, error, numpy.inf), e, a

    grid = numpy.linspace(0.002, 3.0, 300)
    best = int(numpy.argmin(solve(grid)[0]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    alpha = minimize_scalar(lambda a: float(solve(numpy.array([a]))[0][0]), bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-7}).x
    error, e, a = (v[0] for v in solve(numpy.array([alpha])))
    if not math.isfinite(error):
        raise ValueError("no decreasing power law L = E + A*C^-alpha fits these points (loss grows with compute)")
    return float(e), float(a * math.exp(alpha * centre)), float(alpha)


def compute_to_reach(fit, loss):
    """The compute at which the curve `fit` (E, A, alpha) reaches `loss`; inf below its floor E."""
    e, a, alpha = fit
    return (a / (loss - e)) ** (1 / alpha) if loss > e and alpha > 0 else math.inf


def cell_means(table):
    """Mean loss and FLOPs, standard error of the loss and seed count per (preset, size)."""
    groups = table.groupby(["preset", "size"], sort=False)
    out = groups.agg(flops=("flops", "mean"), val_loss=("val_loss", "mean"), seeds=("seed", "count"),
                     non_embedding_params=("non_embedding_params", "mean"), epochs=("epochs", "mean")).reset_index()
    out["val_loss_se"] = groups["val_loss"].sem().values
    return out[["preset", "size", "non_embedding_params", "epochs", "seeds", "flops", "val_loss", "val_loss_se"]]


def analyse(table, baseline=None, boot=2000, seed=0):
    """The study's numbers from collect()'s table: (cells, fits). cells: per (preset, size) the
    mean loss +- s.e., FLOPs, and the compute multiplier against the baseline (default: the first
    preset) with its bootstrap 95% interval; fits: per preset E, A, alpha, and alpha minus the
    baseline's, each alpha with its interval. The bootstrap draws every cell's seeds with
    replacement `boot` times and refits every curve."""
    import pandas as pd
    baseline = baseline or table["preset"].iloc[0]
    if baseline not in set(table["preset"]):
        raise ValueError(f"baseline={baseline!r} is not a preset of this study: {sorted(set(table['preset']))}")
    cells = cell_means(table)
    losses = {key: group["val_loss"].to_numpy() for key, group in table.groupby(["preset", "size"], sort=False)}
    order = list(dict.fromkeys(cells["preset"]))

    keys, flops = list(zip(cells["preset"], cells["size"])), dict(zip(zip(cells["preset"], cells["size"]), cells["flops"]))
    members = {p: [key for key in keys if key[0] == p] for p in order}

    def estimates(mean_loss):
        """fits and multipliers from one set of cell mean losses {(preset, size): loss}."""
        fits = {p: fit_power_law([flops[k] for k in members[p]], [mean_loss[k] for k in members[p]]) for p in order}
        return fits, {k: compute_to_reach(fits[baseline], mean_loss[k]) / flops[k] for k in keys}

    point_fits, point_mult = estimates({key: v.mean() for key, v in losses.items()})
    rng = numpy.random.default_rng(seed)
    boot_alpha = {p: [] for p in order}
    boot_delta = {p: [] for p in order}
    boot_mult = {key: [] for key in point_mult}
    for _ in range(boot):
        sample = {key: rng.choice(v, size=len(v)).mean() for key, v in losses.items()}
        try:
            fits, mult = estimates(sample)
        except ValueError:
            continue
        for p in order:
            boot_alpha[p].append(fits[p][2])
            boot_delta[p].append(fits[p][2] - fits[baseline][2])
        for key, value in mult.items():
            boot_mult[key].append(value)

    def interval(values):  # no interpolation, so an infinite draw stays infinite instead of nan
        return tuple(numpy.quantile(values, q, method="inverted_cdf") for q in (0.025, 0.975)) if values \
            else (math.nan, math.nan)
    cells["multiplier"] = [point_mult[(p, s)] for p, s in zip(cells["preset"], cells["size"])]
    cells["multiplier_lo"], cells["multiplier_hi"] = zip(*(interval(boot_mult[(p, s)])
                                                           for p, s in zip(cells["preset"], cells["size"])))
    fits = pd.DataFrame([{"preset": p, "E": point_fits[p][0], "A": point_fits[p][1], "alpha": point_fits[p][2],
                          "alpha_lo": interval(boot_alpha[p])[0], "alpha_hi": interval(boot_alpha[p])[1],
                          "alpha_minus_baseline": point_fits[p][2] - point_fits[baseline][2],
                          "delta_lo": interval(boot_delta[p])[0], "delta_hi": interval(boot_delta[p])[1]}
                         for p in order])
    fits.attrs["baseline"] = baseline
    return cells, fits


# --- the report --------------------------------------------------------------------------------------
def plot_scaling(table, cells, fits, path=None):
    """Left: final validation loss against training FLOPs (log-log), one colour per preset, the
    seeds as dots, their mean with +-1 s.e. bars, and the fitted curve. Right: the compute
    multiplier against FLOPs with its bootstrap 95% interval."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter
    fig, (ax, mult_ax) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.get_cmap("tab10").colors
    span = numpy.geomspace(cells["flops"].min() / 1.5, cells["flops"].max() * 1.5, 200)
    baseline = fits.attrs["baseline"]
    for i, fit in enumerate(fits.itertuples()):
        color, mine = colors[i % len(colors)], cells[cells.preset == fit.preset]
        seeds = table[table.preset == fit.preset]
        ax.scatter(seeds["flops"], seeds["val_loss"], color=color, s=12, alpha=0.5)
        ax.errorbar(mine["flops"], mine["val_loss"], yerr=mine["val_loss_se"].fillna(0), fmt="o", color=color,
                    capsize=4, label=f"{fit.preset}: L = {fit.E:.2f} + {fit.A:.3g}·C^-{fit.alpha:.3f}")
        ax.plot(span, fit.E + fit.A * span ** -fit.alpha, color=color, linewidth=1)
        if fit.preset != baseline:
            finite = mine["multiplier_hi"].replace(math.inf, numpy.nan)
            mult_ax.errorbar(mine["flops"], mine["multiplier"],
                             yerr=[(mine["multiplier"] - mine["multiplier_lo"]).clip(lower=0),
                                   (finite - mine["multiplier"]).clip(lower=0).fillna(0)],
                             fmt="o-", color=color, capsize=4, label=fit.preset)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="final validation loss (nats/token)",
           title="loss against compute (dots: seeds; bars: ±1 s.e.; lines: fits)")
    ax.legend(fontsize=8)
    mult_ax.axhline(1, color="black", linewidth=0.8)
    mult_ax.set(xscale="log", yscale="log", xlabel="training FLOPs C",
                ylabel=f"compute multiplier vs {baseline}",
                title=f"{baseline}'s compute to reach each loss / the compute used (bars: bootstrap 95%)")
    mult_ax.legend(fontsize=8)
    for a in (ax, mult_ax):
        a.grid(alpha=0.3, which="both")
        a.yaxis.set_major_formatter(ScalarFormatter())
        a.yaxis.set_minor_formatter(ScalarFormatter())  # log axes spanning less than a decade: plain numbers
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def summary_markdown(table, cells, fits, tokens_per_param=None):
    baseline = fits.attrs["baseline"]
    shown = cells.assign(multiplier_95=[f"{lo:.3g} – {hi:.3g}" for lo, hi in zip(cells.multiplier_lo,
                                                                                 cells.multiplier_hi)])
    shown = shown.drop(columns=["multiplier_lo", "multiplier_hi"])
    budget = f"{tokens_per_param:g} training tokens per non-embedding parameter" if tokens_per_param else "see the runs"
    return "\n".join([
        f"# Scaling study\n\nBudget: {budget}; every run's whole cosine schedule fitted to it. "
        f"Final validation loss (nats/token) per run, {len(table)} runs:\n",
        tools.markdown_table(table, {"seed": "{}", "non_embedding_params": "{:,}", "tokens": "{:,}",
                                     "epochs": "{:.2f}", "flops": "{:.3g}"}),
        f"\nPer preset and size: mean over seeds +- standard error; the compute multiplier is the compute "
        f"{baseline} needs, on its fitted curve, to reach that loss, divided by the compute used (above 1 = "
        f"better than {baseline}; inf = below {baseline}'s fitted floor E), with a bootstrap 95% interval over "
        "seeds:\n",
        tools.markdown_table(shown, {"seeds": "{}", "non_embedding_params": "{:,.0f}", "epochs": "{:.2f}",
                                     "flops": "{:.3g}", "multiplier": "{:.3g}"}),
        f"\nFits L = E + A·C^-alpha (C in FLOPs); alpha with its bootstrap 95% interval, and alpha minus {baseline}'s "
        "(above 0: the gap to the baseline widens with compute):\n",
        tools.markdown_table(fits, {"A": "{:.3g}"}),
        *(["\nWith fewer than three sizes E is fixed at 0 (two compute budgets cannot fix three numbers)."]
          if cells.groupby("preset")["size"].nunique().min() < 3 else []),
    ]) + "\n"


def report(study_dir, out_dir=None, baseline=None, boot=2000, tokens_per_param=None):
    """collect + analyse; writes summary.md and scaling.png to out_dir (default: the study's
    folder). Returns (table, cells, fits)."""
    import matplotlib.pyplot as plt
    table = collect(study_dir)
    cells, fits = analyse(table, baseline, boot)
    out_dir = out_dir or study_dir
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary_markdown(table, cells, fits, tokens_per_param))
    plt.close(plot_scaling(table, cells, fits, os.path.join(out_dir, "scaling.png")))
    return table, cells, fits


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(v) for v in text.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        raise ValueError(f"--shard={text!r} is invalid: must be I/N with 0 <= I < N, e.g. 0/2 and 1/2") from None
    return index, count


def train_in_workers(argv, planned, workers, script):
    """Run this command's training (`script` with argv) in `workers` processes (shard i/workers
    each, no report) on this machine; prints the aggregate tokens/s."""
    if not isinstance(workers, int) or not 1 <= workers <= 64:
        raise ValueError(f"--workers={workers!r} is invalid: must be an integer from 1 to 64")
    if "--shard" in argv:
        raise ValueError("--workers and --shard cannot be combined: --workers N runs the shards 0/N .. N-1/N itself")
    argv = [a for i, a in enumerate(argv) if a not in ("--workers", "--no_report") and not a.startswith("--workers=")
            and (i == 0 or argv[i - 1] != "--workers")]  # each worker gets --shard and --no_report, once
    commands = [[sys.executable, script, *argv, "--shard", f"{i}/{workers}", "--no_report"]
                for i in range(workers)]
    codes, tokens_per_s = runs.run_workers(commands, lambda: [runs.run_dir(t) for _, t, _ in planned])
    print(f"{workers} workers: {tokens_per_s:,.0f} tokens/s in all")
    if any(codes):
        raise ValueError(f"worker(s) {[i for i, c in enumerate(codes) if c]} failed (exit codes {codes}); "
                         "run the same command again to go on where they stopped")


def add_study_arguments(p, folder):
    """The options every study's command shares: where its runs live, how to split the training
    (--shard, --workers), and whether to train or report only."""
    p.add_argument("--folder", default=folder, help=f"parent folder of studies (default {os.path.relpath(folder, config.ROOT)})")
    p.add_argument("--shard", default="0/1", help="train only every N-th run from the I-th (I/N), one process per shard")
    p.add_argument("--workers", type=int, default=1, help="train the runs in N processes at once on this machine "
                   "(shards 0/N .. N-1/N), then report (default 1)")
    p.add_argument("--no_train", action="store_true", help="only report the finished runs")
    p.add_argument("--no_report", action="store_true", help="only train (a worker's part; report later)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


def train_study(argv, planned, args, script):
    """Train a study's planned runs as its command asked (add_study_arguments): in --workers
    processes, or this process's --shard. `script` is the study's command file."""
    if args.workers != 1:
        train_in_workers(argv, planned, args.workers, script)
    else:
        run_study(planned, parse_shard(args.shard), progress=not args.no_progress, script=os.path.basename(script))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = tools.ArgumentParser(description=__doc__)
    p.add_argument("--study", required=True, help="the study's name: its runs live in trained/scaling/STUDY/")
    p.add_argument("--presets", nargs="+", default=["llama_1m", "ff_1m", "mm_1m"],
                   help="presets to scale; the first is the baseline (default: llama_1m ff_1m mm_1m)")
    p.add_argument("--sizes", nargs="+", default=["0.1M", "0.2M", "0.4M"],
                   help="non-embedding parameter targets, e.g. 0.1M 250k (default: 0.1M 0.2M 0.4M)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="seeds per cell (default: 1 2)")
    p.add_argument("--tokens_per_param", type=float, default=10.0,
                   help="token budget per non-embedding parameter (default 10; Chinchilla-optimal is about 20)")
    add_study_arguments(p, STUDIES)
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--out", default="", help="folder for summary.md and scaling.png (default: the study's folder)")
    config.add_config_arguments(p, title="config fields for every run (override the presets; e.g. --device cuda)")
    args = p.parse_args(argv)
    try:
        overrides = config.overrides_from_args(args)
        taken = sorted(set(overrides) & set(STUDY_FIELDS))
        if taken:
            raise ValueError(f"{', '.join('--' + k for k in taken)} cannot be set here: the study sets every run's "
                             "name, folder, seed (--seeds) and steps (--tokens_per_param)")
        planned = plan(args.study, args.presets, args.sizes, args.seeds, args.tokens_per_param, overrides, args.folder)
        if not args.no_train:
            train_study(argv, planned, args, os.path.abspath(__file__))
        if args.no_report:
            return
        table, cells, fits = report(os.path.join(args.folder, args.study), args.out or None, boot=args.boot,
                                    tokens_per_param=args.tokens_per_param)
    except (*tools.USER_ERRORS, data.DataUnavailable) as e:
        tools.fail(e)
    except KeyboardInterrupt as e:
        tools.fail(e or "interrupted; run the same command again to go on where it stopped")
    print(summary_markdown(table, cells, fits, args.tokens_per_param))


if __name__ == "__main__":
    main()
