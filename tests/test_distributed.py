"""torchrun with two gloo processes on CPU trains exactly what one process trains at the same
global batch (batch_size is global; each process takes half of every batch)."""
import csv
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURE_DATA, ROOT, needs_muon

ARGS = ["--preset", "tiny", "--device", "cpu", "--compile", "off", "--autocast", "off", "--dropout", "0",
        "--data_dir", FIXTURE_DATA, "--batch_size", "8", "--grad_accum_steps", "2", "--max_steps", "6",
        "--eval_interval", "3", "--checkpoint_interval", "3", "--eval_tokens", "2048", "--no_progress"]


def run(launcher, out_dir, name, optimizer="adamw"):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *launcher, os.path.join(ROOT, "train.py"), *ARGS,
                             "--out_dir", str(out_dir), "--name", name, "--optimizer", optimizer], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = os.path.join(out_dir, name)
    with open(os.path.join(folder, "log_data.csv")) as f:
        rows = list(csv.DictReader(f))
    return rows, load_file(os.path.join(folder, "model.safetensors")), result.stdout


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("optimizer", ["adamw", pytest.param("muon", marks=needs_muon)])
def test_two_gloo_processes_equal_one_process(tmp_path, optimizer):
    one_rows, one_weights, _ = run([], tmp_path, "one", optimizer)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two_rows, two_weights, stdout = run(launcher, tmp_path, "two", optimizer)
    assert "2 processes" in stdout and stdout.count("non-embedding") == 1  # rank 0 alone prints
    assert ("and muon" in stdout) == (optimizer == "muon")  # the banner shows the split
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows] == ["3", "6"]  # one log, no duplicates
    for a, b in zip(one_rows, two_rows):
        assert a["tokens"] == b["tokens"]
        for column in ("train_loss", "val_loss", "grad_norm"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-4), column
    assert one_weights.keys() == two_weights.keys()
    # Muon orthogonalises in bf16 (torch.optim.Muon): a last-bit difference in the averaged gradient
    # can flip a bf16 rounding, so its weights agree less tightly (the losses above still to 1e-4)
    atol = 2e-4 if optimizer == "muon" else 2e-5
    for key in one_weights:
        torch.testing.assert_close(two_weights[key], one_weights[key], atol=atol, rtol=1e-4)


def test_each_process_takes_its_own_rows(monkeypatch):
    import distributed
    batch = {"tokens": torch.arange(8)[:, None].expand(8, 3), "targets": torch.arange(8)[:, None], "note": "x"}
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, rows in ((0, [0, 1, 2, 3]), (1, [4, 5, 6, 7])):
        monkeypatch.setenv("RANK", str(rank))
        share = distributed.Context().share(batch)
        assert share["tokens"][:, 0].tolist() == share["targets"][:, 0].tolist() == rows and share["note"] == "x"
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="batch_size=8 must be divisible by the number of processes \\(3\\)"):
        distributed.Context().check_batch(8)


def _children(pid):
    """PIDs of the processes whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes through /proc")
def test_interrupted_two_process_run_resumes_exactly(tmp_path):
    """Ctrl-C reaches the two workers; they stop at the same step, save, and the resumed job ends
    with the weights and log of an uninterrupted one."""
    import signal
    import time
    args = [a if a != "6" else "60" for a in ARGS]  # max_steps 60
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                os.path.join(ROOT, "train.py"), *args, "--out_dir", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole = subprocess.run(launcher + ["--name", "whole"], env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    job = subprocess.Popen(launcher + ["--name", "cut"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / "log_data.csv"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2) and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    for pid in _children(job.pid):  # what a terminal's Ctrl-C does: SIGINT to every process of the job
        os.kill(pid, signal.SIGINT)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-3000:]
    assert "interrupted: saved step" in out, "the job finished before it was interrupted; make it longer"
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              os.path.join(ROOT, "train.py"), "--resume", str(tmp_path / "cut"), "--no_progress"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole, cut = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("whole", "cut"))
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
    kept = ("step", "tokens", "flops", "lr", "train_loss", "val_loss", "val_loss_se", "val_bpc")  # not the timings
    rows = [[{k: r[k] for k in kept} for r in csv.DictReader(open(tmp_path / n / "log_data.csv"))] for n in ("whole", "cut")]
    assert rows[0] == rows[1]
