import json
import os
import subprocess
import sys

import optuna
import pytest

import config
import presets
import modules
import hparam_search as hs
from conftest import FIXTURE_DATA, ROOT, cli_error

MEASURE = """
import json, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
import presets
from modules import build_model
from train import make_optimizer
model_cfg, train_cfg = presets.get_preset({preset!r}, **json.loads({overrides!r}))
x = torch.randint(model_cfg.vocab_size, (train_cfg.batch_size, model_cfg.max_seq_len))

def peak_rss():  # VmHWM: this process's peak resident memory (ru_maxrss would include the parent's, kept over exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024

before = peak_rss()
model = build_model(model_cfg)
opt = make_optimizer(model, train_cfg, torch.device("cpu"))
for _ in range(2):
    model(x, x)[1].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
print(peak_rss() - before)
"""


@pytest.mark.parametrize("preset,overrides", [("llama_1m", {"batch_size": 8}), ("gpt2_1m", {"batch_size": 4})])
def test_memory_estimate_within_a_factor_of_the_measured_peak(preset, overrides):
    script = MEASURE.format(root=ROOT, preset=preset, overrides=json.dumps(overrides))
    measured = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    estimate = modules.estimate_training_memory(*presets.get_preset(preset, **overrides))
    assert 1 / 1.5 <= estimate / measured <= 1.5, (estimate, measured)


def test_parse_space_and_its_errors():
    space = hs.parse_space(["lr=log:1e-3:3e-2", "dim=choice:64,96", "warmup_frac=float:0:0.1", "num_layers=int:2:4",
                            "mlp_gated=choice:true,false"])
    assert space == {"lr": ("log", (1e-3, 3e-2)), "dim": ("choice", [64, 96]), "warmup_frac": ("float", (0.0, 0.1)),
                     "num_layers": ("int", (2, 4)), "mlp_gated": ("choice", [True, False])}
    for bad, match in (("widht=choice:1", "not a ModelConfig or TrainConfig field"), ("lr=log:0:1", "LOW > 0"),
                       ("lr=uniform:1:2", "invalid"), ("dim=int:5:2", "invalid")):
        with pytest.raises(ValueError, match=match):
            hs.parse_space([bad])


@pytest.fixture
def sweeps(tmp_path, monkeypatch):
    monkeypatch.setattr(hs, "SWEEPS", str(tmp_path / "sweeps"))
    return tmp_path / "sweeps"


TINY = dict(data_dir=FIXTURE_DATA, device="cpu", compile="off", autocast="off", eval_interval=2, checkpoint_interval=2,
            batch_size=4, eval_tokens=1024)


def test_over_the_limit_and_invalid_configs_are_pruned_without_being_built(sweeps, monkeypatch):
    import modules

    def never(*_, **__):
        raise AssertionError("a pruned config must not be built or trained")
    real_run = hs.subprocess.run

    def no_trial_child(command, *args, **kwargs):  # other subprocesses (matplotlib's fc-list, ...) still run
        if "--_child" in command:
            never()
        return real_run(command, *args, **kwargs)
    monkeypatch.setattr(hs.subprocess, "run", no_trial_child)  # no trial may reach training
    monkeypatch.setattr(modules, "build_model", never)  # nor be built (the estimate builds on the meta device)
    study = hs.search("limits", "tiny", ["dim=choice:4096"], trials=1, tokens=2048, fixed=TINY, memory_limit_gb=0.05,
                      progress=False)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["memory_estimate_gb"] > 0.05
    assert "limit" in trial.user_attrs["error"]
    study = hs.search("invalid", "tiny", ["num_kv_heads=choice:3"], trials=1, tokens=2048, fixed=TINY, progress=False)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "num_q_heads=2 is invalid: must be divisible by num_kv_heads=3" in trial.user_attrs["error"]
    assert modules  # the registry stays importable


def test_tiny_study_end_to_end_then_resumes(sweeps):
    space = ["lr=log:1e-3:1e-2", "dim=choice:16,32"]
    study = hs.search("tiny3", "tiny", space, trials=3, tokens=4 * 64 * 6, fixed=TINY, progress=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:  # each trial is a normal run folder with its log
        run = os.path.join(config.ROOT, t.user_attrs["run"])
        assert os.path.isfile(os.path.join(run, "log_data.csv")) and os.path.isfile(os.path.join(run, "model.safetensors"))
        assert t.intermediate_values and t.value == pytest.approx(list(t.intermediate_values.values())[-1])
    for name in ("summary.md", "history.png", "params.png"):
        assert os.path.isfile(sweeps / "tiny3" / name)
    # a crash leaves a trial RUNNING: the restarted search fails it, retries its parameters and continues
    crashed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
                         "dim": optuna.distributions.CategoricalDistribution([16, 32])})
    params = crashed.params
    study = hs.search("tiny3", "tiny", space, trials=4, tokens=4 * 64 * 6, fixed=TINY, progress=False)
    states = [t.state for t in study.trials]
    assert states[:3] == [optuna.trial.TrialState.COMPLETE] * 3 and states[3] == optuna.trial.TrialState.FAIL
    assert states[4] == optuna.trial.TrialState.COMPLETE and study.trials[4].params == params
    assert [t.value for t in study.trials[:3]] == [t.value for t in done]


def test_out_of_memory_in_training_prunes_the_trial(sweeps, monkeypatch):
    # an estimate that is wrong (here: forced to 1 MiB) lets a config through that needs ~3.5 GiB; its child
    # process may not grow past 1.2 GiB of private memory, fails to allocate, and the trial is pruned as out
    # of memory while the study goes on
    monkeypatch.setattr(modules, "estimate_training_memory", lambda *_: 2**20)
    study = hs.search("oom", "tiny", ["batch_size=choice:4096"], trials=1, tokens=2048, fixed=TINY, memory_limit_gb=0.5,
                      child_overhead_gb=0.7, progress=False)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["error"] == "out of memory while training"


def test_cli_errors(capsys):
    with cli_error(capsys, "at least one --space"):
        hs.main(["--study", "x"])
    with cli_error(capsys, "trials=0 is invalid"):
        hs.main(["--study", "x", "--trials", "0", "--space", "lr=log:1e-3:1e-2"])


def test_two_workers_share_one_study(sweeps):
    study = hs.search("pair", "tiny", ["lr=log:1e-3:1e-2"], trials=2, tokens=4 * 64 * 2, fixed=TINY, workers=2,
                      progress=False)
    assert os.path.isfile(sweeps / "pair" / "study.journal")  # several processes: Optuna's journal storage
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and len({t.user_attrs["run"] for t in done}) == 2
    assert done[0].params["lr"] != done[1].params["lr"]  # each worker draws its own values


def test_a_resumed_study_and_a_second_worker_draw_new_values(sweeps):
    # one fixed sampler seed would repeat a new process's first random draws: a resumed study would
    # retrain its first trials' values, and two workers started together would train the same ones
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}
    first = hs.open_study("draws", "journal", str(sweeps / "draws"))
    trial = first.ask(lr)
    first.tell(trial, 1.0)
    worker = hs.open_study("draws", "journal", str(sweeps / "draws"), retry_running=False, worker=1)
    second_worker = worker.ask(lr)
    worker.tell(second_worker, 2.0)
    resumed = hs.open_study("draws", "journal", str(sweeps / "draws")).ask(lr)
    assert len({trial.params["lr"], second_worker.params["lr"], resumed.params["lr"]}) == 3
