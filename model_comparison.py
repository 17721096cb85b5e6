"""Compare trained runs: a summary table, loss curves, top-k accuracy and paired loss differences.

    python model_comparison.py trained/llama_1m trained/gpt2_1m --out comparison/
    python model_comparison.py "trained/*" --out comparison/          # every run (quote the glob)

Writes comparison/curves.png and comparison/summary.md. Every run is loaded through the model
registry (inference.load_model), so runs of different architectures compare in one process.
Runs with different tokenizers are plotted in bits per character, which does not depend on
the tokenizer; per-token losses and top-k accuracies do, so compare those only between runs
that share a tokenizer.
"""
import dataclasses
import glob
import json
import math
import os

import pandas as pd
import torch

import data
import inference
import metrics
import tools
from runs import TRAINED, load_configs, read_run


def find_runs(patterns):
    """Run folders matching names or globs (relative to trained/ or the current folder)."""
    runs = []
    for pattern in patterns:
        candidates = glob.glob(pattern) or glob.glob(os.path.join(TRAINED, pattern))
        found = sorted(p for p in candidates if os.path.isfile(os.path.join(p, "log_data.csv")))
        if not found:
            raise FileNotFoundError(f"no trained run matches {pattern!r} (a run folder holds log_data.csv)")
        runs += [os.path.normpath(p) for p in found if os.path.normpath(p) not in runs]
    return runs


def summarize(run):
    """One row of the summary table for a run folder."""
    r = read_run(run)
    last, best = r.last, r.best
    return {"run": os.path.basename(run), "model_type": r.model_cfg.model_type, "tokenizer": r.model_cfg.tokenizer,
            "params": r.params, "non_embedding_params": r.non_embedding_params, "tokens": int(last["tokens"]),
            "flops": float(last["flops"]),
            "wall_clock_s": float(last["elapsed_s"]), "final_val_loss": float(last["val_loss"]),
            "best_val_loss": float(best["val_loss"]), "best_step": int(best["step"]),
            "final_val_bpc": float(last["val_bpc"]), "best_val_bpc": float(best["val_bpc"]),
            "tokens_per_s": float(r.log["tokens_per_s"].median()),
            # a capability probe (tasks.py) is scored by its answers' accuracy
            **({"final_val_acc": float(last["val_acc"]), "final_val_acc_se": float(last["val_acc_se"])}
               if "val_acc" in r.log else {})}


def plot_curves(runs, path=None, final_deltas=None):
    """Top: validation (solid) and train (dashed) loss against step, tokens seen, training FLOPs
    and wall-clock, one colour per run; in bits/char when the runs use different tokenizers.
    Bottom: each run's validation loss minus the first run's at the same steps, with +-2 paired standard errors at
    the end when `final_deltas` [(delta, se), ...] (from compare) are given."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    read = {os.path.basename(r): read_run(r) for r in runs}
    logs = {name: r.log for name, r in read.items()}
    in_bpc = len({r.model_cfg.tokenizer for r in read.values()}) > 1
    unit = "bits per character" if in_bpc else "nats per token"
    colors = plt.get_cmap("tab10" if len(logs) <= 10 else "tab20").colors
    x_axes = (("step", "step"), ("tokens", "tokens seen"), ("flops", "training FLOPs"), ("elapsed_s", "wall-clock seconds"))
    fig = plt.figure(figsize=(19, 8.5))
    grid = fig.add_gridspec(2, len(x_axes), height_ratios=(1.3, 1))
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(x_axes))]
    for ax in axes[1:]:
        ax.sharey(axes[0])
    delta_ax = fig.add_subplot(grid[1, :])
    low, high, first = float("inf"), 0.0, None
    for i, (name, log) in enumerate(logs.items()):
        color = colors[i % len(colors)]
        # nats/token -> bits/char with the validation split's characters per token (same for train)
        factor = (log["val_bpc"] / log["val_loss"]).iloc[-1] if in_bpc else 1.0
        low = min(low, (log[["val_loss", "train_loss"]] * factor).min().min())
        high = max(high, (log["val_loss"] * factor).max())
        for ax, (x, _) in zip(axes, x_axes):
            ax.plot(log[x], log["val_loss"] * factor, color=color)
            ax.plot(log[x], log["train_loss"] * factor, color=color, linestyle="--", alpha=0.6)
        val = log.set_index("step")["val_loss"] * factor
        first = val if first is None else first
        shared = val.index.intersection(first.index)
        delta_ax.plot(shared, val[shared] - first[shared], color=color, marker="o", markersize=3)
        if final_deltas is not None and i > 0 and not math.isnan(final_deltas[i][1]):
            d, se = (v * factor for v in final_deltas[i])
            delta_ax.errorbar([shared.max()], [d], yerr=[2 * se], color=color, capsize=4, linewidth=2)
    for ax, (_, label) in zip(axes, x_axes):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(low - 0.03 * (high - low), high + 0.05 * (high - low))  # the first train losses are far above
    axes[0].set_ylabel(f"loss ({unit})")
    first_name = next(iter(logs))
    delta_ax.axhline(0, color="black", linewidth=0.8)
    delta_ax.set(xlabel="step", ylabel=f"val loss - {first_name}'s ({unit})",
                 title=f"validation loss minus {first_name}'s at the same steps"
                       + (" (bars: +-2 paired s.e. over the final windows)" if final_deltas is not None else ""))
    delta_ax.grid(alpha=0.3)
    lengths = {name: int(log["step"].max()) for name, log in logs.items()}
    note = ""
    if max(lengths.values()) > 1.5 * min(lengths.values()):
        short = ", ".join(f"{n} ({s:,} steps)" for n, s in lengths.items() if s < max(lengths.values()))
        note = f"\nruns of different lengths: {short} end early (their cosine schedules ended sooner too)"
    handles = [Line2D([], [], color=colors[i % len(colors)], label=name) for i, name in enumerate(logs)]
    handles += [Line2D([], [], color="black", label="validation"), Line2D([], [], color="black", linestyle="--",
                                                                          label="train (mean since last eval)")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    fig.suptitle("train (dashed) and validation (solid) loss" + note)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


@torch.no_grad()
def window_metrics(run, ks=(1, 5), data_dir="", eval_tokens=None, batch_size=8, device="auto"):
    """Teacher-forcing top-k accuracy on the run's fixed validation windows (those its training
    evaluated on: eval_tokens from its train_config.json unless given), the mean loss of each
    window, (N,) nats/token, and the windows' target ids (N, T), for paired comparisons."""
    model, _, cfg = inference.load_model(run, device)
    if max(ks) > cfg.vocab_size:
        raise ValueError(f"top-k k={max(ks)} is invalid for {run}: must be at most its vocabulary size, {cfg.vocab_size}")
    _, train_cfg = load_configs(run, data_dir)
    train_cfg = dataclasses.replace(train_cfg, eval_tokens=eval_tokens or train_cfg.eval_tokens)
    dev = next(model.parameters()).device
    hits, count, window_losses, targets = {k: 0 for k in ks}, 0, [], []
    for batch in data.get_dataset(cfg, train_cfg).val_batches(batch_size):
        batch = tools.to_device(batch, dev)
        logits, y = model(**batch)[0], batch["targets"]
        window_losses.append(metrics.window_losses(logits, y).cpu())
        targets.append(y.cpu())
        batch_hits, counted = metrics.topk_hits(logits, y, ks)
        hits = {k: hits[k] + batch_hits[k] for k in ks}
        count += counted
    return {k: hits[k] / count for k in ks}, torch.cat(window_losses), torch.cat(targets)


def repeated_name_items(tokens, tokenizer, max_len):
    """The probe of the multi-token-prediction paper (arXiv 2404.19737), built from packed
    validation tokens: every later occurrence of a two-token name that already appeared in the
    same story. A two-token name is " Xx" (a capitalised piece after a space) followed by a
    lowercase continuation, not followed by another one, and seen at least once mid-sentence
    (after a lowercase word or a comma), which leaves out capitalised sentence starts.
    Returns the stories (lists of ids, each cut to max_len) and the items (story, position):
    the model reads the first piece at `position` and should predict the second."""
    import re
    pieces = [tokenizer.decode([i]) for i in range(tokenizer.get_vocab_size())]
    name_start = [bool(re.fullmatch(r" [A-Z][a-z]*", p)) for p in pieces]
    lowercase = [bool(re.fullmatch(r"[a-z]+", p)) for p in pieces]
    mid_sentence = [bool(re.search(r"[a-z,]$", p)) for p in pieces]
    ids = tokens.tolist()
    bounds = [i for i, t in enumerate(ids) if t == data.EOT_ID] + [len(ids)]
    stories, items = [], []
    for a, b in zip(bounds, bounds[1:]):
        story = ids[a:b][:max_len]
        occurrences = {}
        for j in range(1, len(story) - 1):
            if name_start[story[j]] and lowercase[story[j + 1]] and not (j + 2 < len(story) and lowercase[story[j + 2]]):
                occurrences.setdefault((story[j], story[j + 1]), []).append(j)
        probe = [j for js in occurrences.values() if any(mid_sentence[story[j - 1]] for j in js) for j in js[1:]]
        items += [(len(stories), j) for j in sorted(probe)]
        stories.append(story)
    return stories, items


@torch.no_grad()
def name_recall(run, data_dir="", batch_size=16, device="auto"):
    """Accuracy (greedy, teacher forcing) on the second piece of repeated two-token names in the
    run's validation text (see repeated_name_items): (N,) bool hits, one per item (none when the
    run's dataset has no story text)."""
    model, tokenizer, cfg = inference.load_model(run, device)
    _, train_cfg = load_configs(run, data_dir)
    dataset = data.get_dataset(cfg, train_cfg)
    if not hasattr(dataset, "valid_data"):  # a dataset without story text (MoMeM's questions): no probe
        return torch.zeros(0, dtype=torch.bool)
    stories, items = repeated_name_items(dataset.valid_data.tokens, tokenizer, cfg.max_seq_len)
    dev = next(model.parameters()).device
    wanted = sorted({story for story, _ in items})
    hits = {}
    for i in range(0, len(wanted), batch_size):
        rows = [stories[k] for k in wanted[i:i + batch_size]]
        x = tools.pad_rows(rows, data.PAD_ID)  # right padding: a causal model's earlier outputs ignore it
        predicted = model(x.to(dev))[0].argmax(dim=-1).cpu()
        for r, k in enumerate(wanted[i:i + batch_size]):
            hits[k] = predicted[r]
    return torch.tensor([bool(hits[k][j] == stories[k][j + 1]) for k, j in items])


STORY_COLUMNS = ("distinct_1", "distinct_2", "distinct_3", "repeated_4gram", "mean_words", "ended")


def validation_stories(run, count, data_dir=""):
    """The first `count` validation stories of the run's data, as text: prompts (each story's
    first sentence) and the real continuations (the rest), or ([], []) for a dataset without
    story text (MoMeM's questions)."""
    import re
    model_cfg, train_cfg = load_configs(run, data_dir)
    dataset = data.get_dataset(model_cfg, train_cfg)
    if not hasattr(dataset, "valid_data"):
        return [], []
    tokenizer = data.load_tokenizer(model_cfg.tokenizer)
    ids = dataset.valid_data.tokens[:1600 * count].tolist()  # enough for count stories of TinyStories' length
    bounds = [i for i, t in enumerate(ids) if t == data.EOT_ID] + [len(ids)]
    stories = [tokenizer.decode(ids[a + 1:b]) for a, b in zip(bounds, bounds[1:]) if b > a + 1][:count]
    split = [re.match(r"(.+?[.!?])(\s.*)", story, re.S) for story in stories]
    pairs = [(m.group(1), m.group(2)) for m in split if m]
    return [p for p, _ in pairs], [c for _, c in pairs]


def story_quality(run, prompts, max_new_tokens=200, seed=0, device="auto"):
    """metrics.story_statistics of one story per prompt, sampled by the run's model with fixed
    settings (temperature 0.8, min_p 0.05, seed): how varied and how repetitive its stories are,
    how long, and whether they end."""
    model, tokenizer, _ = inference.load_model(run, device)
    ids = inference.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.8, min_p=0.05,
                             seed=seed, return_ids=True)
    texts = [inference.decode_continuation(tokenizer, row.tolist()) for row in ids]
    return metrics.story_statistics(texts, [data.EOT_ID in row.tolist() for row in ids])


def plot_story_quality(table, reference, path=None):
    """Bars of each story statistic per run, the real validation stories' value as a line."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(STORY_COLUMNS), figsize=(3.2 * len(STORY_COLUMNS), 3.8))
    colors = plt.get_cmap("tab10" if len(table) <= 10 else "tab20").colors
    for ax, column in zip(axes, STORY_COLUMNS):
        ax.bar(range(len(table)), table[column], color=[colors[i % len(colors)] for i in range(len(table))])
        ax.axhline(reference[column], color="black", linestyle="--", label="validation stories")
        ax.set_xticks(range(len(table)), table["run"], rotation=60, ha="right", fontsize=8)
        ax.set_title(column)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("story quality: one sampled story per validation prompt (dashed: the real stories)")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


SEED_FREE = ("seed", "name", "out_dir", "data_dir")  # what may differ between runs of one group


def seed_groups(table, configs):
    """Runs that differ only in their seed, grouped (in table order): per group its runs and
    seeds, the mean final validation loss over seeds +- its standard error, and the difference
    to the first group paired by seed (same seed = same data order and initialisation) +- the
    standard error of those paired differences. configs: {run: (model dict, train dict)}."""
    def key(run):
        model, train = configs[run]
        return json.dumps([model, {k: v for k, v in train.items() if k not in SEED_FREE}], sort_keys=True)
    losses = dict(zip(table["run"], table["final_val_loss"]))
    groups = {}
    for run in table["run"]:
        groups.setdefault(key(run), []).append(run)
    first = {configs[r][1]["seed"]: losses[r] for r in next(iter(groups.values()))}
    rows = []
    for members in groups.values():
        by_seed = {configs[r][1]["seed"]: losses[r] for r in members}
        mean, se = metrics.mean_and_se(torch.tensor(list(by_seed.values()), dtype=torch.float64))
        shared = sorted(set(by_seed) & set(first))
        delta, delta_se = metrics.mean_and_se(torch.tensor([by_seed[s] - first[s] for s in shared],
                                                           dtype=torch.float64)) if shared else (math.nan,) * 2
        rows.append({"group": members[0], "runs": ", ".join(members), "seeds": len(by_seed), "val_loss_mean": mean,
                     "val_loss_se": se, "delta_by_seed": delta, "delta_by_seed_se": delta_se, "paired_seeds": len(shared)})
    return pd.DataFrame(rows)


def paired_difference(losses, reference):
    """Mean of losses - reference over the same windows, and its standard error (paired)."""
    return metrics.mean_and_se(losses - reference)


def compare(run_patterns, out_dir=None, ks=(1, 5), data_dir="", eval_tokens=None, progress=True, stories=32):
    """Summary table (a pandas DataFrame, with top-k accuracy columns) and the curve figure.
    When all runs were evaluated on the same windows (same tokenizer, context and data),
    delta_loss +- delta_se compares each with the first run (its window losses minus the first
    run's, mean and paired standard error: a difference well beyond 2 s.e. is not evaluation
    noise; name_delta +- name_delta_se does the same for name_recall). name_recall is the
    multi-token-prediction paper's probe (see repeated_name_items), with its standard error and
    item count. With stories > 0, each run samples one story per prompt (the first sentences of
    that many validation stories) and the table gains STORY_COLUMNS (metrics.story_statistics);
    the real continuations' statistics are the reference (table.attrs["story_reference"]). With
    out_dir, also writes curves.png, stories.png and summary.md there."""
    from tqdm.auto import tqdm
    if not ks or not all(isinstance(k, int) and k >= 1 for k in ks):
        raise ValueError(f"top-k ks={ks!r} is invalid: must be positive integers (--topk 1,5)")
    runs = find_runs(run_patterns)
    if not isinstance(stories, int) or isinstance(stories, bool) or stories < 0:
        raise ValueError(f"stories={stories!r} is invalid: must be an integer >= 0 (0 = no story statistics)")
    prompts, real = validation_stories(runs[0], stories, data_dir) if stories else ([], [])
    rows, window_losses, windows, recalls = [], [], [], []
    for run in tqdm(runs, desc="runs", disable=not progress):
        row = summarize(run)
        accuracy, losses, targets = window_metrics(run, ks, data_dir, eval_tokens)
        row.update({f"top{k}_acc": acc for k, acc in accuracy.items()})
        recall = name_recall(run, data_dir).float()
        recalls.append(recall)
        row["name_recall"], row["name_recall_se"] = metrics.mean_and_se(recall) if len(recall) else (math.nan,) * 2
        row["name_items"] = len(recall)
        if prompts:
            row.update(story_quality(run, prompts))
        rows.append(row)
        window_losses.append(losses)
        windows.append(targets)
    table = pd.DataFrame(rows)
    same_windows = all(w.shape == windows[0].shape and torch.equal(w, windows[0]) for w in windows)
    if same_windows and len(runs) > 1:
        table["delta_loss"], table["delta_se"] = zip(*(paired_difference(w, window_losses[0]) for w in window_losses))
        if len(recalls[0]) > 1:  # same windows: same tokens, so the same name items
            table["name_delta"], table["name_delta_se"] = zip(*(paired_difference(r, recalls[0]) for r in recalls))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    final = list(zip(table["delta_loss"], table["delta_se"])) if "delta_loss" in table else None
    fig = plot_curves(runs, os.path.join(out_dir, "curves.png") if out_dir else None, final)
    configs = {os.path.basename(r): tuple(dataclasses.asdict(c) for c in load_configs(r)) for r in runs}
    groups = seed_groups(table, configs)
    if (groups["seeds"] > 1).any():
        table.attrs["seed_groups"] = groups
    if prompts:
        table.attrs["story_reference"] = metrics.story_statistics(real, [True] * len(real))
        plot_story_quality(table, table.attrs["story_reference"], os.path.join(out_dir, "stories.png") if out_dir else None)
    if out_dir:
        with open(os.path.join(out_dir, "summary.md"), "w") as f:
            f.write(summary_markdown(table) + "\n")
    return table, fig


SUMMARY_FORMATS = {"params": "{:,}", "non_embedding_params": "{:,}", "tokens": "{:,}", "wall_clock_s": "{:.0f}",
                   "tokens_per_s": "{:,.0f}", "best_step": "{}", "name_items": "{}", "mean_words": "{:.1f}",
                   "flops": "{:.3g}"}


def summary_markdown(table):
    """The summary as a markdown table with readable number formats (and a note under it when
    the runs' tokenizers differ)."""
    lines = [tools.markdown_table(table, SUMMARY_FORMATS)]
    groups = table.attrs.get("seed_groups")
    if groups is not None:
        lines.append("\nRuns that differ only in their seed, grouped: the mean final validation loss over seeds +- "
                     "its standard error, and the difference to the first group paired by seed (same seed = same "
                     "data order and initialisation) +- the standard error of the paired differences.\n")
        lines.append(tools.markdown_table(groups, {"seeds": "{}", "paired_seeds": "{}"}))
    reference = table.attrs.get("story_reference")
    if reference:
        lines.append("\nStory statistics (`distinct_1` .. `ended`): one story per prompt, the first sentences of "
                     "the first validation stories, sampled at temperature 0.8, min_p 0.05, seed 0. The real "
                     "continuations of the same prompts: " + ", ".join(f"{k} {v:.4f}" for k, v in reference.items()) + ".")
    if "tokenizer" in table and table["tokenizer"].nunique() > 1:
        lines.append(f"\nThese runs use different tokenizers ({', '.join(table['tokenizer'].unique())}): compare them "
                     "by val_bpc (bits per character); per-token losses and top-k accuracies do not compare.")
    return "\n".join(lines)


def main(argv=None):
    p = tools.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", help="run folders, names under trained/, or globs")
    p.add_argument("--out", default="comparison", help="folder for curves.png and summary.md")
    p.add_argument("--topk", default="1,5", help="comma-separated k values for top-k accuracy")
    p.add_argument("--data_dir", default="", help="validation data folder (default: the folder each run stored when it exists here, else MMS_DATA_DIR)")
    p.add_argument("--eval_tokens", type=int, default=None, help="validation tokens for top-k (default: the run's)")
    p.add_argument("--stories", type=int, default=32, help="stories each run samples for the story statistics "
                   "(distinct-n, repeated 4-grams, length, ended; default 32, 0 = none)")
    args = p.parse_args(argv)
    try:
        try:
            ks = tuple(int(k) for k in args.topk.split(","))
        except ValueError:
            raise ValueError(f"--topk={args.topk!r} is invalid: must be comma-separated positive integers") from None
        table, _ = compare(args.runs, args.out, ks, args.data_dir, args.eval_tokens, stories=args.stories)
    except (*tools.USER_ERRORS, data.DataUnavailable) as e:
        tools.fail(e)
    print(summary_markdown(table))
    written = ["curves.png", *(["stories.png"] if "story_reference" in table.attrs else []), "summary.md"]
    print(f"\nwrote {', '.join(os.path.join(args.out, name) for name in written)}")


if __name__ == "__main__":
    main()
