"""probes.py: a tiny grid (2 architectures x 2 widths x 1 difficulty) runs end to end, resumes
after SIGTERM without retraining finished cells, and reports the best learning rate per cell."""
import os

import pandas as pd
import pytest

import probes
import train
from conftest import sigterm_the_nth_run

TINY = dict(device="cpu", compile="off", autocast="off", max_steps=6, eval_interval=3, checkpoint_interval=3,
            eval_tokens=16 * 8, batch_size=8, task_vocab=32)


def tiny_grid(folder):
    return probes.plan("t", ["tiny", "mamba2_1m"], [16, 32], ["16:2"], [1e-3, 1e-2], [1], overrides=TINY,
                       folder=folder)


def test_a_preset_at_another_width_keeps_its_design():
    cfg = probes.plan("w", ["mamba2_1m", "mm_1m", "ff_1m"], [64], ["64:4"], [1e-3], [1])
    mamba, mm, ff = (c for c, _, _ in cfg)
    assert (mamba.dim, mamba.num_layers, mamba.mamba_head_dim, mamba.pos_encoding) == (64, 2, 32, "none")
    assert mm.mm_pmem_size == 192 and mm.head_dim * mm.num_q_heads == 64  # slots per head scale with the width
    assert ff.num_layers == 3  # FutureFormer's floor: a layer per scale plus one
    assert all(c.max_seq_len == 64 for c, _, _ in cfg) and all(t.task_pairs == 4 for _, t, _ in cfg)


def test_tiny_grid_runs_resumes_and_reports(tmp_path, monkeypatch):
    planned = tiny_grid(str(tmp_path))
    assert len(planned) == 8 and planned[0][2] == {"preset": "tiny", "width": 16, "difficulty": "16:2", "lr": 1e-3,
                                                   "seed": 1}
    real_train = sigterm_the_nth_run(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        probes.scaling.run_study(planned, progress=False, script="probes.py")
    folders = [os.path.join(t.out_dir, t.name) for _, t, _ in planned]
    finished = {f: os.path.getmtime(os.path.join(f, "model.safetensors")) for f in folders[:2]}
    monkeypatch.setattr(train, "train", real_train)
    probes.scaling.run_study(planned, progress=False, script="probes.py")
    assert all(os.path.getmtime(os.path.join(f, "model.safetensors")) == t for f, t in finished.items())  # skipped
    assert "python probes.py --study t" in open(os.path.join(folders[0], "README.md")).read()

    table, summary = probes.report(os.path.join(str(tmp_path), "t"))
    assert len(table) == 8 and len(summary) == 4  # 2 presets x 2 widths, the best of 2 lrs each
    best = probes.best_of_lrs(table)
    for _, row in summary.iterrows():
        rows = table[(table.preset == row.preset) & (table.width == row.width)]
        assert row.accuracy == pytest.approx(rows.val_acc.max())
        assert row.best_lrs == f"{best[(best.preset == row.preset) & (best.width == row.width)].lr.iloc[0]:g}"
    for name in ("summary.md", "probes.png"):
        assert os.path.getsize(os.path.join(str(tmp_path), "t", name)) > 0


@pytest.mark.parametrize("argv, message", [
    (["--difficulties", "64"], "difficulty='64' is invalid"),
    (["--lr", "0.1"], "--lr cannot be set here"),
    (["--widths", "64", "64"], "widths=[64, 64] is invalid"),
])
def test_bad_arguments_get_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        probes.main(["--study", "x", "--folder", str(tmp_path), "--presets", "tiny", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_table_reads_as_written():
    table = pd.DataFrame([dict(preset="a", width=16, difficulty="16:2", seed=seed, lr=lr, val_acc=acc, val_acc_se=0.01,
                               non_embedding_params=1234)
                          for seed, lr, acc in ((1, 1e-3, 0.4), (1, 1e-2, 0.9), (2, 1e-3, 0.7), (2, 1e-2, 0.5))])
    summary = probes.cells(table)  # best lr per seed (0.9, 0.7), then their mean and spread
    assert summary.accuracy.tolist() == [pytest.approx(0.8)] and summary.best_lrs.tolist() == ["0.01 0.001"]
    assert (summary.lo.tolist(), summary.hi.tolist(), summary.seeds.tolist(), summary.lrs.tolist()) == ([0.7], [0.9], [2], [2])
    text = probes.summary_markdown(summary, "mqar")
    assert "| 1,234 | 16:2 | 0.800 ± 0.010 | 0.700 – 0.900 | 2 | 2 | 0.01 0.001 |" in text


def test_a_panel_title_says_what_the_difficulty_counts():
    assert probes.difficulty_title("64:4", "mqar") == "length 64, 4 pairs"
    assert probes.difficulty_title("64:16", "copying") == "length 64, 16 ids to copy"
    assert probes.difficulty_title("128:1", "icll") == "length 128"  # icll has no pairs
