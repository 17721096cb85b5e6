import os

import pytest
import torch

import metrics
import model_comparison as mc
import train
from conftest import tiny_configs, cli_error
import modules


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    runs = []
    # two architectures and two tokenizers, compared in one process
    mm_char = dict(model_type="mm", pos_encoding="none", mm_pmem_size=16, tokenizer="char",
                   mlp_hidden_mult=4.0, num_kv_heads=1)  # tiny's MLP width is not a Memory Mosaics knob
    for name, overrides in (("a_gpt", dict()), ("b_mm_char", mm_char)):
        cfg, tcfg = tiny_configs(name=name, out_dir=str(out), max_steps=20, eval_interval=10, lr=1e-2, **overrides)
        runs.append(train.train(cfg, tcfg, progress=False))
    return runs


def test_topk_hits_hand_checked():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9],    # ranking 3, 1, 2, 0
                           [1.0, 0.0, 0.3, 0.2],    # ranking 0, 2, 3, 1
                           [0.0, 0.0, 5.0, 1.0]])   # its target is ignored (-100)
    hits, counted = metrics.topk_hits(logits[:2], torch.tensor([1, 0]), ks=(1, 2, 4))
    assert hits == {1: 1, 2: 2, 4: 2} and counted == 2  # row 0: target ranked 2nd; row 1: ranked 1st
    hits, counted = metrics.topk_hits(logits, torch.tensor([3, 0, -100]), ks=(1,))
    assert hits == {1: 2} and counted == 2  # rows 0 and 1 hit at k=1; row 2 does not count


def test_window_losses_average_counted_tokens_only():
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, 3, 4], [5, -100, -100, 6]])
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    expected = torch.stack([per_token[0].mean(), (per_token[1, 0] + per_token[1, 3]) / 2])
    torch.testing.assert_close(metrics.window_losses(logits, targets), expected)


def test_compare_two_runs(two_runs, tmp_path):
    table, _ = mc.compare(two_runs, str(tmp_path / "cmp"), ks=(1, 5), progress=False)
    assert list(table["run"]) == ["a_gpt", "b_mm_char"] and list(table["model_type"]) == ["gpt", "mm"]
    assert (table["params"] > table["non_embedding_params"]).all() and (table["tokens"] == 20 * 8 * 64).all()
    for k in (1, 5):
        assert table[f"top{k}_acc"].between(0, 1).all()
    assert (table["top5_acc"] >= table["top1_acc"]).all()
    assert (table["best_val_loss"] <= table["final_val_loss"]).all()
    assert os.path.getsize(tmp_path / "cmp" / "curves.png") > 10_000
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ")]  # the header and a row per run
    assert len(rows) == 3 and rows[1].startswith("| a_gpt |") and "different tokenizers (bpe512, char)" in summary


def test_paired_difference_hand_checked():
    mean, se = mc.paired_difference(torch.tensor([2.0, 3.0, 4.0, 5.0]), torch.tensor([1.0, 3.0, 3.0, 5.0]))
    assert mean == pytest.approx(0.5)  # differences 1, 0, 1, 0: std 0.57735, / sqrt(4)
    assert se == pytest.approx(0.57735 / 2, abs=1e-5)


def test_same_windows_give_delta_columns(two_runs, tmp_path):
    import shutil
    twin = shutil.copytree(two_runs[0], tmp_path / "twin")  # the same weights under another name
    table, _ = mc.compare([two_runs[0], str(twin)], ks=(1,), progress=False)
    assert list(table["delta_loss"]) == [0.0, 0.0] and list(table["delta_se"]) == [0.0, 0.0]
    table, _ = mc.compare(two_runs, ks=(1,), progress=False)  # different tokenizers: not comparable per window
    assert "delta_loss" not in table


def test_topk_equals_direct_computation(two_runs):
    import data
    import inference
    run = two_runs[0]
    acc, window_losses, targets = mc.window_metrics(run, ks=(1, 3))
    model, _, cfg = inference.load_model(run, device="cpu")
    val = data.get_token_data("valid", cfg.tokenizer, tiny_configs()[1].data_dir)
    x, y = data.validation_windows(val.tokens, cfg.max_seq_len, 2048)
    with torch.no_grad():
        logits = model(x)[0]
    assert torch.equal(targets, y)
    assert acc[1] == pytest.approx((logits.argmax(-1) == y).float().mean().item(), abs=1e-6)
    per_window = torch.stack([torch.nn.functional.cross_entropy(lx, ly) for lx, ly in zip(logits, y)])
    torch.testing.assert_close(window_losses, per_window, atol=1e-5, rtol=1e-5)


def test_cli_and_errors(two_runs, tmp_path, capsys):
    mc.main([two_runs[0], "--out", str(tmp_path / "cli"), "--topk", "1"])
    assert "| a_gpt |" in capsys.readouterr().out
    with cli_error(capsys, "no trained run matches"):
        mc.main(["does_not_exist_*", "--out", str(tmp_path)])
    with cli_error(capsys, "--topk"):
        mc.main([two_runs[0], "--topk", "0"])


def test_repeated_name_items_hand_checked():
    import data
    tok = data.load_tokenizer("bpe2048")
    assert len(tok.encode(" Sammy").ids) == 2 and len(tok.encode(" Jenna").ids) == 2
    texts = ["One day, a boy named Sammy went out. Sammy saw Jenna. The dog liked Sammy and Sammyx.",
             "Jenna was here. Jenna ran.",  # a name only at sentence starts is not counted
             "Sammy met Sammy."]  # a new story starts afresh: only its own repeat counts
    ids = []
    for text in texts:
        ids += [data.EOT_ID] + tok.encode(text).ids
    stories, items = mc.repeated_name_items(torch.tensor(ids), tok, 512)
    sam, my = tok.encode(" Sammy").ids
    assert len(stories) == 3
    # story 0: the 2nd and 3rd " Sammy" (not the first, not "Sammyx", not Jenna seen once); story 2: none,
    # since its first Sammy has no leading space and so is another token
    assert [story for story, _ in items] == [0, 0]
    assert all(stories[k][j] == sam and stories[k][j + 1] == my for k, j in items)


def test_name_recall_matches_greedy_predictions(two_runs):
    import inference
    import data
    run = two_runs[0]
    hits = mc.name_recall(run)
    model, tok, cfg = inference.load_model(run, device="cpu")
    val = data.get_token_data("valid", cfg.tokenizer, tiny_configs()[1].data_dir)
    stories, items = mc.repeated_name_items(val.tokens, tok, cfg.max_seq_len)
    assert len(hits) == len(items)
    with torch.no_grad():
        expected = [int(model(torch.tensor([stories[k]]))[0][0, j].argmax()) == stories[k][j + 1] for k, j in items]
    assert hits.tolist() == expected


def test_story_statistics_by_hand():
    texts = ["the cat sat on the mat the cat sat on the mat", "a dog ran"]
    # words: 12 + 3; unigrams: the cat sat on mat a dog ran = 8 distinct of 15
    assert metrics.distinct_n(texts, 1) == pytest.approx(8 / 15)
    # bigrams: 11 + 2 = 13; distinct: the-cat cat-sat sat-on on-the the-mat mat-the a-dog dog-ran = 8
    assert metrics.distinct_n(texts, 2) == pytest.approx(8 / 13)
    # 4-grams of the first: 9, of which "the cat sat on" ... the second half repeats 3 of the first 6
    assert metrics.repeated_ngram_share(texts[0], 4) == pytest.approx(3 / 9)
    assert metrics.repeated_ngram_share("one two three", 4) == 0.0
    stats = metrics.story_statistics(texts, [True, False])
    assert stats["mean_words"] == 7.5 and stats["ended"] == 0.5
    assert stats["repeated_4gram"] == pytest.approx((3 / 9 + 0) / 2)


def test_compare_reports_story_statistics_with_the_real_stories_as_reference(two_runs, tmp_path):
    table, _ = mc.compare(two_runs, str(tmp_path), eval_tokens=1024, progress=False, stories=4)
    for column in mc.STORY_COLUMNS:
        assert table[column].notna().all(), column
    assert ((table["distinct_1"] > 0) & (table["distinct_1"] <= 1)).all()
    reference = table.attrs["story_reference"]
    assert reference["ended"] == 1.0 and reference["mean_words"] > 5
    assert os.path.isfile(tmp_path / "stories.png")
    assert "The real continuations of the same prompts" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ValueError, match="stories=-1 is invalid"):
        mc.compare(two_runs, None, stories=-1)


def test_seed_groups_by_hand():
    """Runs that differ only in seed form one group; the second group's difference is paired by seed."""
    import pandas as pd
    base, other = {"dim": 32}, {"dim": 64}
    configs = {"a1": (base, {"seed": 1, "name": "a1", "lr": 0.01}), "a2": (base, {"seed": 2, "name": "a2", "lr": 0.01}),
               "b1": (other, {"seed": 1, "name": "b1", "lr": 0.01}), "b2": (other, {"seed": 2, "name": "b2", "lr": 0.01}),
               "c1": (base, {"seed": 1, "name": "c1", "lr": 0.02})}
    table = pd.DataFrame({"run": ["a1", "a2", "b1", "b2", "c1"], "final_val_loss": [3.0, 3.2, 2.9, 3.0, 4.0]})
    groups = mc.seed_groups(table, configs)
    assert list(groups["group"]) == ["a1", "b1", "c1"] and list(groups["seeds"]) == [2, 2, 1]
    assert groups["val_loss_mean"][0] == pytest.approx(3.1) and groups["val_loss_se"][0] == pytest.approx(0.1)
    # b - a by seed: -0.1 and -0.2 -> mean -0.15, s.e. std([-0.1, -0.2]) / sqrt(2) = 0.05
    assert groups["delta_by_seed"][1] == pytest.approx(-0.15) and groups["delta_by_seed_se"][1] == pytest.approx(0.05)
    assert groups["paired_seeds"][2] == 1 and groups["delta_by_seed"][2] == pytest.approx(1.0)


def test_compare_groups_runs_that_differ_only_in_seed(tmp_path):
    runs = []
    for seed in (1, 2):
        cfg, tcfg = tiny_configs(name=f"s{seed}", seed=seed, out_dir=str(tmp_path), max_steps=4, eval_interval=2)
        runs.append(train.train(cfg, tcfg, progress=False))
    table, _ = mc.compare(runs, str(tmp_path / "cmp"), ks=(1,), eval_tokens=1024, progress=False, stories=0)
    groups = table.attrs["seed_groups"]
    assert list(groups["seeds"]) == [2] and groups["paired_seeds"][0] == 2 and groups["delta_by_seed"][0] == 0
    assert table["flops"][0] == pytest.approx(table["tokens"][0] * modules.flops_per_token(table["params"][0], cfg))
    assert "differ only in their seed" in (tmp_path / "cmp" / "summary.md").read_text()
