"""The speedrun referee: which recipe reaches a target validation loss in the fewest tokens?

    python bench/speedrun.py                                    # adamw and muon at 0.4, 0.6, 1.0 of the schedule
    python bench/speedrun.py --recipes adamw muon muon_all --fractions 0.3 0.5 --seeds 1337 1
    python bench/speedrun.py --recipes muon --base trained/ff_1m --target 2.3461 --fractions 0.5

Every recipe starts from a base run's configs (default trained/llama_1m, the shipped model:
same data, tokenizer, batch and fixed validation windows) with the recipe's fields changed, and
trains at fractions of the base's schedule: the whole cosine schedule shortened (warmup,
evaluation and checkpoint intervals scaled with it), not a truncated run. Each run is a normal
run folder, trained/speedrun/BASE/RECIPE_fFRACTION_sSEED, skipped when finished and resumed when
interrupted, so the benchmark resumes where it stopped. AdamW at the full schedule is the
reference: the base run itself where its configs are that recipe's (no retraining) and
--train_reference is not given, else trained, after the recipes. So two lanes can share a machine:
one with --recipes adamw --fractions 1 (the reference), one with the other recipes.

Printed (and written to trained/speedrun/BASE/summary.md): per recipe, fraction and seed the
steps, tokens, wall-clock and final validation loss, the difference to the reference on the
same windows (paired by window: mean +- standard error), and per recipe and seed the smallest
fraction that reaches the target, with its tokens and wall-clock against the reference's.
Wall-clock is this machine's, with whatever else ran on it: compare within one table.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
import metrics  # noqa: E402
import presets  # noqa: E402
import runs  # noqa: E402
import tools  # noqa: E402
from model_comparison import window_metrics  # noqa: E402
from train import train_or_resume  # noqa: E402

# recipe -> the fields it changes in the base configs; an ablation row per tweak, on top of Muon
TWEAKS = {"qknorm": dict(qk_norm=True), "relu2": dict(mlp_activation="relu2"), "zeroinit": dict(zero_init_proj=True),
          "softcap": dict(logit_softcap=15.0), "untied": dict(tie_embeddings=False)}
MUON = dict(optimizer="muon")  # one lr for both optimizers (match_rms_adamw): the base's
RECIPES = {"adamw": {}, "muon": MUON, **{f"muon_{name}": dict(MUON, **fields) for name, fields in TWEAKS.items()},
           "muon_all": dict(MUON, **{k: v for t in ("qknorm", "relu2", "zeroinit", "softcap") for k, v in TWEAKS[t].items()})}
SPEEDRUNS = os.path.join(config.ROOT, "trained", "speedrun")


def recipe_configs(base_dir, recipe, fraction, seed, folder=SPEEDRUNS, lrs=None):
    """(model_cfg, train_cfg) of `recipe` at `fraction` of the base run's schedule; lrs:
    {optimizer: peak lr} for the recipes of that optimizer (default: the base's), in their run
    names too."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is invalid: must be one of {list(RECIPES)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} is invalid: must be in (0, 1]")
    model_cfg, train_cfg = runs.load_configs(base_dir)
    fields = dict(RECIPES[recipe])
    lr = (lrs or {}).get(fields.get("optimizer", "adamw"))
    if lr:
        fields["lr"] = lr
    model_kw, train_kw = config.split_overrides(fields)
    steps = max(1, round(train_cfg.max_steps * fraction))
    scale = steps / train_cfg.max_steps
    lr_tag = f"_lr{fields['lr']:g}" if "lr" in fields else ""
    train_kw = dict(train_kw, max_steps=steps, seed=seed, name=f"{recipe}{lr_tag}_f{fraction:g}_s{seed}",
                    out_dir=os.path.join(folder, os.path.basename(os.path.normpath(base_dir))),
                    eval_interval=max(1, round(train_cfg.eval_interval * scale)),
                    checkpoint_interval=max(1, round(train_cfg.checkpoint_interval * scale)))
    model_cfg = config.ModelConfig(**{**config.to_dict(model_cfg), **model_kw})
    train_cfg = config.TrainConfig(**{**config.to_dict(train_cfg), **train_kw})
    return presets.check(model_cfg, train_cfg)


def reference_run(base_dir, seed, progress, folder=SPEEDRUNS, lrs=None, reuse_base=True):
    """AdamW at the full schedule for this seed: the base run itself when it is exactly that and
    `reuse_base` (False: trained here, so that precision and wall-clock are this machine's too)."""
    model_cfg, train_cfg = recipe_configs(base_dir, "adamw", 1.0, seed, folder, lrs)
    same = not runs.changed_fields(base_dir, model_cfg, train_cfg, ignore=("name", "out_dir"))
    if reuse_base and same and os.path.isfile(os.path.join(base_dir, "README.md")):
        return base_dir
    return trained(model_cfg, train_cfg, progress)


def trained(model_cfg, train_cfg, progress):
    """The run's folder, trained (or resumed) unless finished; Ctrl-C (saved) stops the benchmark."""
    folder, finished = train_or_resume(model_cfg, train_cfg, progress,
                                       command=f"python bench/speedrun.py ({train_cfg.name})")
    if not finished:
        raise KeyboardInterrupt("interrupted; run the same command again to go on where it stopped")
    return folder


def evaluated(folder, seen):
    """(window losses, last log row) of a run, computed once per folder (`seen` holds them)."""
    if folder not in seen:
        seen[folder] = window_metrics(folder, ks=(1,))[1], runs.read_run(folder).last
    return seen[folder]


def speedrun(base_dir, recipes, fractions, seeds, target, progress=True, folder=SPEEDRUNS, lrs=None,
             reuse_base=True):
    """Train what is missing and return the table of rows (dicts) described in the docstring."""
    rows, seen = [], {}
    for seed in seeds:
        # the recipes first, the reference last: one process per recipe can then share a machine,
        # and one that reaches the reference while another trains it stops with the lock's message
        runs_of = {(recipe, fraction): None if recipe == "adamw" and fraction == 1 else
                   trained(*recipe_configs(base_dir, recipe, fraction, seed, folder, lrs), progress)
                   for recipe in recipes for fraction in sorted(fractions)}
        reference = reference_run(base_dir, seed, progress, folder, lrs, reuse_base)
        ref_losses, ref_last = evaluated(reference, seen)
        for (recipe, fraction), run_folder in runs_of.items():
            run_folder = run_folder or reference
            losses, last = evaluated(run_folder, seen)
            delta, se = metrics.mean_and_se(losses - ref_losses)
            rows.append({"recipe": recipe, "fraction": fraction, "seed": seed, "steps": int(last["step"]),
                         "tokens": int(last["tokens"]), "minutes": last["elapsed_s"] / 60,
                         "tokens_per_s": last["tokens"] / last["elapsed_s"], "val_loss": float(last["val_loss"]),
                         "delta": delta, "delta_se": se, "reached": bool(last["val_loss"] <= target),
                         "ref_tokens": int(ref_last["tokens"]), "trained_here": run_folder != base_dir,
                         "ref_tokens_per_s": ref_last["tokens"] / ref_last["elapsed_s"] if reference != base_dir
                         else math.nan})
    return rows


def smallest_reaching(rows):
    """Per recipe and seed: the smallest fraction whose run reaches the target, its tokens against
    the reference's, and its wall-clock against the reference's tokens at AdamW's tokens/s as
    measured by the AdamW runs trained here, the reference among them even where it is not a row
    (a reused base run was timed elsewhere)."""
    adamw_rates = sorted([r["tokens_per_s"] for r in rows if r["recipe"] == "adamw" and r["trained_here"]]
                         or [r["ref_tokens_per_s"] for r in rows if not math.isnan(r["ref_tokens_per_s"])])
    adamw_rate = adamw_rates[len(adamw_rates) // 2] if adamw_rates else math.nan
    out = []
    for recipe, seed in dict.fromkeys((r["recipe"], r["seed"]) for r in rows):
        reached = [r for r in rows if (r["recipe"], r["seed"]) == (recipe, seed) and r["reached"]]
        best = min(reached, key=lambda r: r["fraction"]) if reached else None
        out.append({"recipe": recipe, "seed": seed, "fraction": best["fraction"] if best else math.nan,
                    "tokens_ratio": best["tokens"] / best["ref_tokens"] if best else math.nan,
                    "wall_ratio": best["minutes"] * 60 / (best["ref_tokens"] / adamw_rate) if best else math.nan})
    return out


def report(rows, target):
    import pandas as pd
    table = pd.DataFrame(rows).drop(columns=["ref_tokens", "trained_here", "ref_tokens_per_s"])
    reached = pd.DataFrame(smallest_reaching(rows))
    formats = {"seed": "{}", "steps": "{:,}", "tokens": "{:,}", "minutes": "{:.1f}", "tokens_per_s": "{:,.0f}",
               "fraction": "{:g}", "reached": "{}"}
    return (f"Target: final validation loss <= {target:.4f}. delta: val loss minus AdamW's at the full schedule "
            "(same seed), mean over the same windows +- paired s.e.\n\n"
            + tools.markdown_table(table, formats)
            + "\n\nSmallest fraction of the schedule that reaches the target (tokens and wall-clock against AdamW at "
              "the full schedule, the latter at AdamW's tokens/s measured here; nan: none of the fractions tried):\n\n"
            + tools.markdown_table(reached, {"seed": "{}", "fraction": "{:g}", "tokens_ratio": "{:.3f}",
                                             "wall_ratio": "{:.3f}"}) + "\n")


def main():
    p = tools.ArgumentParser(description=__doc__)
    p.add_argument("--base", default="llama_1m", help="the run whose configs every recipe starts from (default llama_1m)")
    p.add_argument("--recipes", nargs="+", default=["adamw", "muon"], help=f"of {list(RECIPES)} (default adamw muon)")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.4, 0.6, 1.0], help="of the base's schedule")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the base run's seed")
    p.add_argument("--target", type=float, default=None, help="validation loss to reach (default: the base run's final)")
    p.add_argument("--muon_lr", type=float, default=None, help="peak lr of the Muon recipes (default: the base's; "
                   "tune it with hparam_search.py --set optimizer=muon --space lr=log:...)")
    p.add_argument("--adamw_lr", type=float, default=None, help="peak lr of AdamW, the reference included (default: "
                   "the base's, and the base run is the reference)")
    p.add_argument("--train_reference", action="store_true", help="train AdamW at the full schedule here even "
                   "where the base run is that recipe (a base trained elsewhere may have run in another precision)")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args()
    try:
        base = runs.find_run(args.base)
        if not os.path.isfile(os.path.join(base, "train_config.json")):
            raise FileNotFoundError(f"--base {args.base!r} is not a run folder (it needs train_config.json)")
        # with --target the base needs only its configs (its training may live elsewhere)
        target = args.target if args.target is not None else float(runs.read_run(base).last["val_loss"])
        seeds = args.seeds or [runs.load_configs(base)[1].seed]
        rows = speedrun(base, args.recipes, args.fractions, seeds, target, not args.no_progress,
                        lrs={"adamw": args.adamw_lr, "muon": args.muon_lr}, reuse_base=not args.train_reference)
    except (*tools.USER_ERRORS, KeyboardInterrupt) as e:
        tools.fail(e)
    text = report(rows, target)
    print(text)
    out = os.path.join(SPEEDRUNS, os.path.basename(os.path.normpath(base)), "summary.md")
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
