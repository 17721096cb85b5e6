"""bench/speedrun.py's referee logic on a tiny base run: shortened schedules, the base reused as
AdamW's full-schedule reference, paired deltas, the smallest fraction reaching the target, and
a second call that trains nothing."""
import os
import sys

import pytest

from conftest import ROOT, needs_muon

sys.path.insert(0, os.path.join(ROOT, "bench"))
import speedrun  # noqa: E402


@needs_muon
def test_tiny_speedrun_reuses_the_base_and_resumes(tiny_run, tmp_path):
    model_cfg, train_cfg = speedrun.recipe_configs(tiny_run, "muon_qknorm", 0.5, 7, folder=str(tmp_path))
    assert (train_cfg.max_steps, train_cfg.optimizer, model_cfg.qk_norm, train_cfg.seed) == (3, "muon", True, 7)
    assert train_cfg.warmup_steps == int(train_cfg.warmup_frac * 3)  # the whole schedule, shortened
    with pytest.raises(ValueError, match="fraction=1.5 is invalid"):
        speedrun.recipe_configs(tiny_run, "muon", 1.5, 7)
    seed = speedrun.runs.load_configs(tiny_run)[1].seed
    rows = speedrun.speedrun(tiny_run, ["adamw", "muon"], [0.5, 1.0], [seed], target=99.0, progress=False,
                             folder=str(tmp_path))
    assert [(r["recipe"], r["fraction"]) for r in rows] == [("adamw", 0.5), ("adamw", 1.0), ("muon", 0.5), ("muon", 1.0)]
    reference = rows[1]
    assert not reference["trained_here"] and reference["delta"] == 0  # the base run itself, not retrained
    assert not os.path.exists(os.path.join(tmp_path, os.path.basename(tiny_run), f"adamw_f1_s{seed}"))
    assert rows[3]["steps"] == 6 and rows[3]["delta_se"] > 0  # muon at the full schedule: paired over windows
    best = speedrun.smallest_reaching(rows)
    assert [(b["recipe"], b["fraction"], b["tokens_ratio"]) for b in best] == [("adamw", 0.5, 0.5), ("muon", 0.5, 0.5)]
    assert "Smallest fraction" in speedrun.report(rows, 99.0)
    folder = os.path.join(tmp_path, os.path.basename(tiny_run), f"muon_f0.5_s{seed}")
    stamp = os.path.getmtime(os.path.join(folder, "model.safetensors"))
    again = speedrun.speedrun(tiny_run, ["muon"], [0.5], [seed], target=0.0, progress=False, folder=str(tmp_path))
    assert os.path.getmtime(os.path.join(folder, "model.safetensors")) == stamp  # finished: skipped
    assert again[0]["val_loss"] == rows[2]["val_loss"] and not again[0]["reached"]


@needs_muon
def test_tiny_speedrun_trains_the_reference_here_when_asked(tiny_run, tmp_path):
    seed = speedrun.runs.load_configs(tiny_run)[1].seed
    rows = speedrun.speedrun(tiny_run, ["muon"], [0.5], [seed], target=99.0, progress=False, folder=str(tmp_path),
                             reuse_base=False)
    assert os.path.isfile(os.path.join(tmp_path, os.path.basename(tiny_run), f"adamw_f1_s{seed}", "README.md"))
    assert rows[0]["delta"] != 0 and rows[0]["ref_tokens_per_s"] > 0  # paired with AdamW trained here
    best = speedrun.smallest_reaching(rows)[0]  # wall-clock against that reference, though it is not a row
    assert best["tokens_ratio"] == 0.5 and best["wall_ratio"] > 0
