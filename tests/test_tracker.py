"""Live tracking: TensorBoard event files hold what log_data.csv holds, once per step, also after
a crash and a resume; wandb is refused in one line where it is not installed."""
import csv
import importlib.util
import os

import pytest

import trackers
import train
from conftest import tiny_configs

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def events(run):
    acc = EventAccumulator(os.path.join(run, "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_equal_the_csv_across_a_resume(tmp_path, monkeypatch):
    cfg, tcfg = tiny_configs(tracker="tensorboard", max_steps=12, eval_interval=2, checkpoint_interval=4,
                             out_dir=str(tmp_path), name="tracked")
    original = trackers.TensorBoard.log

    def crash_after_logging_step_10(self, row, step):  # step 10's events are written, its checkpoint never is
        original(self, row, step)
        if step == 10:
            raise RuntimeError("simulated crash")
    monkeypatch.setattr(trackers.TensorBoard, "log", crash_after_logging_step_10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train(cfg, tcfg, progress=False)
    monkeypatch.setattr(trackers.TensorBoard, "log", original)
    run = train.resume_run(os.path.join(tmp_path, "tracked"), progress=False)  # from step 8: 10 is done again
    with open(os.path.join(run, "log_data.csv")) as f:
        rows = list(csv.DictReader(f))
    acc = events(run)
    for column in ("val_loss", "train_loss", "val_bpc", "lr", "grad_norm", "tokens_per_s"):
        scalars = acc.Scalars(column)
        assert [s.step for s in scalars] == [int(r["step"]) for r in rows] == list(range(2, 13, 2)), column
        assert [s.value for s in scalars] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), column
    assert [e.step for e in acc.Tensors("sample/text_summary")] == list(range(2, 13, 2))
    assert [e.step for e in acc.Tensors("config/text_summary")] == [0]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_without_the_package_is_one_clear_error(tmp_path):
    cfg, tcfg = tiny_configs(tracker="wandb", max_steps=2, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="tracker='wandb' needs the wandb package: `pip install wandb`"):
        train.train(cfg, tcfg, progress=False)
    assert not os.path.exists(os.path.join(tmp_path, tcfg.name))  # no half-made run folder
