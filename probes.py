"""Capability probes: which architecture can do what, in minutes, on synthetic tasks (tasks.py).

    python probes.py --study mqar --presets llama_1m mamba2_1m --widths 32 64 128 --difficulties 64:4 64:8 \
        --lrs 1e-3 3e-3 --seeds 1 --workers 2 --out comparison/probes/mqar

A study is a grid of architectures (presets) x widths x task difficulties x learning rates x
seeds. Every cell is a normal run folder, trained/probes/STUDY/PRESET_wWIDTH_LENGTH-PAIRS_lrLR_sSEED,
planned here and trained, resumed or skipped by scaling.py's study machinery (`run_study`,
`--shard I/N`, `--workers N`): a study is restarted by running the same command again. Each
preset keeps its own design (norms, heads, mixer) at `num_layers` layers (2, as Zoology; more
where the architecture needs them) and width `dim` = WIDTH, with every field that scales with the
width scaled with it. A difficulty LENGTH:PAIRS sets the sequence length and, for mqar, the
key-value pairs (copying: the ids to copy; icll: PAIRS is ignored).

The report (summary.md, probes.png) takes, as Zoology does, the best learning rate of every
(preset, width, difficulty, seed) by final validation accuracy, then the mean over seeds with
its spread: accuracy against width, one panel per difficulty, one line per architecture.
"""
import os
import sys

import config
import data
import modules
import presets
import scaling
import tools
from runs import TRAINED

PROBES = os.path.join(TRAINED, "probes")
# Zoology's recipe at our scale: batch 64, cosine schedule with warmup, no dropout, 65k validation tokens.
# Eager: compiling costs 30-70 s for every new shape, more than it saves in a cell of a 0.1M model
DEFAULTS = dict(dataset="mqar", tokenizer="bpe512", task_vocab=256, batch_size=64, max_steps=1500, eval_interval=250,
                checkpoint_interval=250, eval_tokens=65536, dropout=0.0, weight_decay=0.1, compile="off")


COUNTED = {"mqar": "pairs", "mqar_control": "pairs", "copying": "ids to copy"}  # what a difficulty's PAIRS counts


def parse_difficulty(text):
    """'128:8' -> (128, 8): sequence length and pairs."""
    try:
        length, pairs = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise ValueError(f"difficulty={text!r} is invalid: give LENGTH:PAIRS, e.g. 64:4 or 256:16") from None
    return length, pairs


def at_width(preset, width, layers):
    """Model overrides that take a preset to width `width` (dim) and `layers` layers (at least
    the architecture's floor), keeping every ratio to the width (head_dim, `width_fields`)."""
    base, _ = presets.get_preset(preset)
    return {"dim": width, "num_layers": max(layers, modules.MODEL_REGISTRY[base.model_type].depth_floor(base)),
            **presets.width_overrides(presets.PRESETS[preset], base, width)}


def plan(study, preset_names, widths, difficulties, lrs, seeds, layers=2, overrides=None, folder=PROBES):
    """[(model_cfg, train_cfg, cell)] for every seed x preset x width x difficulty x lr, cell =
    {"preset", "width", "difficulty", "lr", "seed"}, each the run FOLDER/STUDY/NAME."""
    scaling.check_grid(study, presets=preset_names, widths=widths, difficulties=difficulties, lrs=lrs, seeds=seeds)
    planned = []
    for seed in seeds:  # seed-major: a study stopped half-way already covers every cell once
        for preset in preset_names:
            for width in widths:
                for difficulty in difficulties:
                    length, pairs = parse_difficulty(difficulty)
                    for lr in lrs:
                        name = f"{preset}_w{width}_{length}-{pairs}_lr{lr:g}_s{seed}"
                        kw = {**DEFAULTS, **(overrides or {}), **at_width(preset, width, layers), "max_seq_len": length,
                              "task_pairs": pairs, "lr": lr, "seed": seed, "out_dir": os.path.join(folder, study),
                              "name": name}
                        model_cfg, train_cfg = presets.get_preset(preset, recipe=False, **kw)
                        cell = {"preset": preset, "width": width, "difficulty": f"{length}:{pairs}", "lr": lr,
                                "seed": seed}
                        planned.append((model_cfg, train_cfg, cell))
    return planned


def best_of_lrs(table):
    """Per (preset, width, difficulty, seed): the row of the learning rate with the best accuracy."""
    keys = ["preset", "width", "difficulty", "seed"]
    return table.loc[table.groupby(keys)["val_acc"].idxmax()].reset_index(drop=True)


def cells(table):
    """Mean accuracy over seeds of the best learning rates, with the seeds' spread (min, max)
    and the mean of each run's own standard error (over its validation sequences)."""
    best = best_of_lrs(table)
    keys = ["preset", "width", "difficulty"]
    out = best.groupby(keys, sort=False).agg(
        params=("non_embedding_params", "first"), accuracy=("val_acc", "mean"), lo=("val_acc", "min"),
        hi=("val_acc", "max"), se=("val_acc_se", "mean"), seeds=("seed", "nunique"),
        best_lrs=("lr", lambda v: " ".join(f"{x:g}" for x in v))).reset_index()
    out = out.merge(table.groupby(keys)["lr"].nunique().rename("lrs").reset_index(), on=keys)
    order = {preset: i for i, preset in enumerate(dict.fromkeys(table["preset"]))}  # as planned; easy tasks first
    key = out.assign(_p=out["preset"].map(order), _l=[parse_difficulty(d) for d in out["difficulty"]])
    return out.loc[key.sort_values(["_p", "width", "_l"]).index].reset_index(drop=True)


def difficulty_title(difficulty, dataset):
    """'64:4' -> 'length 64, 4 pairs' (mqar), 'length 128' (icll, whose difficulty has no pairs)."""
    length, pairs = parse_difficulty(difficulty)
    return f"length {length}, {pairs} {COUNTED[dataset]}" if dataset in COUNTED else f"length {length}"


def plot_probes(summary, path=None, dataset="mqar"):
    """Accuracy against width, one panel per difficulty, one line per architecture, seed spread shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    difficulties = sorted(set(summary["difficulty"]), key=parse_difficulty)
    fig, axes = plt.subplots(1, len(difficulties), figsize=(4.2 * len(difficulties), 3.6), squeeze=False, sharey=True)
    for ax, difficulty in zip(axes[0], difficulties):
        part = summary[summary["difficulty"] == difficulty]
        for preset, rows in part.groupby("preset", sort=False):
            width, accuracy, lo, hi = rows.sort_values("width")[["width", "accuracy", "lo", "hi"]].to_numpy(float).T
            line, = ax.plot(width, accuracy, marker="o", label=preset)
            ax.fill_between(width, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set(xscale="log", xlabel="width (dim)", title=f"{dataset}: {difficulty_title(difficulty, dataset)}",
               ylim=(-0.02, 1.02))
        widths = sorted(set(part["width"]))
        ax.set_xticks(widths, labels=[str(w) for w in widths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy on answers (best lr)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def summary_markdown(summary, dataset):
    table = summary.assign(accuracy=[f"{a:.3f} ± {s:.3f}" for a, s in zip(summary["accuracy"], summary["se"])],
                           spread=[f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(summary["lo"], summary["hi"])])
    table = table[["preset", "width", "params", "difficulty", "accuracy", "spread", "seeds", "lrs", "best_lrs"]]
    return (f"# Capability probe: {dataset}\n\nBest learning rate per cell and seed; accuracy on answer positions "
            "(mean over seeds ± the runs' standard error over validation sequences), the seeds' spread, how many "
            "learning rates were tried and which won; params counts the non-embedding parameters.\n\n"
            f"{tools.markdown_table(table, {'params': '{:,}'})}\n\n![accuracy against width](probes.png)\n")


def report(study_dir, out_dir=None):
    """(table of runs, summary) of a study's finished runs; summary.md and probes.png into out_dir
    (default: the study's folder)."""
    table = scaling.collect(study_dir)
    if "val_acc" not in table:
        raise ValueError(f"{study_dir} holds no probe runs (no val_acc in their logs)")
    summary = cells(table)
    out_dir = out_dir or study_dir
    os.makedirs(out_dir, exist_ok=True)
    dataset = config.load_json(config.TrainConfig, os.path.join(study_dir, table["run"][0], "train_config.json")).dataset
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(summary, dataset))
    plot_probes(summary, os.path.join(out_dir, "probes.png"), dataset)
    return table, summary


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = tools.ArgumentParser(description=__doc__)
    p.add_argument("--study", required=True, help="the study's name: its runs live in trained/probes/STUDY/")
    p.add_argument("--presets", nargs="+", default=["llama_1m", "mamba2_1m"], help="architectures, by preset")
    p.add_argument("--widths", nargs="+", type=int, default=[64, 128, 256], help="dim of every run (default 64 128 256)")
    p.add_argument("--difficulties", nargs="+", default=["64:4", "128:8", "256:16"],
                   help="LENGTH:PAIRS (default: Zoology's 64:4 128:8 256:16)")
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3], help="learning rates; the best one is reported")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds per cell (default 1)")
    p.add_argument("--layers", type=int, default=2, help="layers of every run (default 2, Zoology's)")
    scaling.add_study_arguments(p, PROBES)
    p.add_argument("--out", default="", help="folder for summary.md and probes.png (default: the study's folder)")
    config.add_config_arguments(p, title="config fields for every run (e.g. --dataset icll, --max_steps, --device)")
    args = p.parse_args(argv)
    try:
        overrides = config.overrides_from_args(args)
        taken = sorted(set(overrides) & {"name", "out_dir", "seed", "lr", "dim", "num_layers", "max_seq_len",
                                         "task_pairs"})
        if taken:
            raise ValueError(f"{', '.join('--' + k for k in taken)} cannot be set here: the study sets them "
                             "(--widths, --layers, --difficulties, --lrs, --seeds)")
        planned = plan(args.study, args.presets, args.widths, args.difficulties, args.lrs, args.seeds, args.layers,
                       overrides, args.folder)
        if not args.no_train:
            scaling.train_study(argv, planned, args, os.path.abspath(__file__))
        if args.no_report:
            return
        _, summary = report(os.path.join(args.folder, args.study), args.out or None)
    except (*tools.USER_ERRORS, data.DataUnavailable) as e:
        tools.fail(e)
    except KeyboardInterrupt as e:
        tools.fail(e or "interrupted; run the same command again to go on where it stopped")
    print(summary_markdown(summary, overrides.get("dataset", DEFAULTS["dataset"])))


if __name__ == "__main__":
    main()
