"""scaling.py: the power-law fit, the bootstrap compute multiplier, and a tiny 2 x 2 x 2 study
that runs end to end and resumes after being interrupted."""
import os

import numpy
import pandas as pd
import pytest

import scaling
import train
from conftest import FIXTURE_DATA, sigterm_the_nth_run


@pytest.mark.parametrize("e, a, alpha", [(1.5, 30.0, 0.1), (0.8, 500.0, 0.2), (2.2, 4.0, 0.05), (0.0, 90.0, 0.15)])
def test_fit_recovers_a_known_power_law(e, a, alpha):
    flops = numpy.geomspace(1e11, 1e14, 5)
    fitted = scaling.fit_power_law(flops, e + a * flops ** -alpha)
    numpy.testing.assert_allclose(fitted, (e, a, alpha), rtol=1e-4, atol=1e-6)


def test_fit_with_noise_is_close_and_two_sizes_fix_the_floor():
    rng = numpy.random.default_rng(0)
    flops = numpy.repeat(numpy.geomspace(1e11, 1e14, 6), 4)
    e, a, alpha = scaling.fit_power_law(flops, 1.5 + 30 * flops ** -0.1 + rng.normal(0, 0.002, len(flops)))
    assert abs(alpha - 0.1) < 0.02 and abs(e - 1.5) < 0.1
    e, a, alpha = scaling.fit_power_law([1e12, 1e13], [3.0, 2.5])
    assert e == 0 and numpy.isclose(a * 1e13 ** -alpha, 2.5)
    with pytest.raises(ValueError, match="two or more compute budgets"):
        scaling.fit_power_law([1e12, 1e12], [3.0, 2.9])


def synthetic_study(rng, multiplier=2.0, seeds=6, noise=0.004):
    """Runs of a baseline on L = 1.5 + 30 C^-0.1 and of an idea that reaches the baseline's loss
    with 1/multiplier of its compute (L_idea(C) = L_base(multiplier * C)), with seed noise."""
    rows = []
    for preset, k in (("base", 1.0), ("idea", multiplier)):
        for size, flops in zip(("s1", "s2", "s3", "s4"), numpy.geomspace(1e11, 1e14, 4)):
            for seed in range(seeds):
                rows.append({"preset": preset, "size": size, "seed": seed, "flops": flops, "non_embedding_params": 1,
                             "epochs": 1.0, "val_loss": 1.5 + 30 * (k * flops) ** -0.1 + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_bootstrap_interval_covers_the_true_multiplier():
    rng = numpy.random.default_rng(1)
    covered, deltas_covered, total = 0, 0, 0
    for _ in range(10):
        cells, fits = scaling.analyse(synthetic_study(rng), boot=300, seed=int(rng.integers(1 << 30)))
        idea = cells[cells.preset == "idea"]
        covered += int(((idea.multiplier_lo <= 2.0) & (2.0 <= idea.multiplier_hi)).sum())
        total += len(idea)
        row = fits.set_index("preset").loc["idea"]
        deltas_covered += int(row.delta_lo <= 0 <= row.delta_hi)  # same exponent: the gap does not grow
        assert numpy.allclose(cells[cells.preset == "base"].multiplier, 1.0, atol=0.05)
    assert covered / total >= 0.8, f"the 95% interval covered the true multiplier in {covered} of {total} cells"
    assert deltas_covered >= 8
    # and it is not vacuous: on noise-free data the point estimate is the truth
    cells, _ = scaling.analyse(synthetic_study(rng, noise=0.0), boot=10)
    numpy.testing.assert_allclose(cells[cells.preset == "idea"].multiplier, 2.0, rtol=1e-3)


def test_a_worse_idea_gets_a_multiplier_below_one():
    cells, _ = scaling.analyse(synthetic_study(numpy.random.default_rng(2), multiplier=0.5), boot=50)
    assert (cells[cells.preset == "idea"].multiplier_hi < 1).all()


def tiny_plan(folder, tokens_per_param=0.5):
    return scaling.plan("t", ["tiny", "ff_1m"], ["10k", "20k"], [1, 2], tokens_per_param, folder=folder,
                        overrides=dict(device="cpu", compile="off", autocast="off", data_dir=FIXTURE_DATA,
                                       tokenizer="bpe512", max_seq_len=64, batch_size=8, eval_tokens=1024))


def test_tiny_study_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    runs = tiny_plan(str(tmp_path))
    assert len(runs) == 8 and runs[0][2] == {"preset": "tiny", "size": "10k", "seed": 1}
    real_train = sigterm_the_nth_run(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt, match="run the same command again"):
        scaling.run_study(runs, progress=False)
    folders = [os.path.join(cfg.out_dir, cfg.name) for _, cfg, _ in runs]
    assert [os.path.isfile(os.path.join(f, "README.md")) for f in folders[:3]] == [True, True, False]
    assert os.path.isfile(os.path.join(folders[2], "checkpoint.pt"))
    first_rows = open(os.path.join(folders[2], "log_data.csv")).read()
    finished = {f: os.path.getmtime(os.path.join(f, "model.safetensors")) for f in folders[:2]}

    monkeypatch.setattr(train, "train", real_train)
    assert scaling.run_study(runs, progress=False) == folders
    assert all(os.path.getmtime(os.path.join(f, "model.safetensors")) == t for f, t in finished.items())  # skipped
    log = pd.read_csv(os.path.join(folders[2], "log_data.csv"))
    assert open(os.path.join(folders[2], "log_data.csv")).read().startswith(first_rows)  # resumed, not restarted
    assert log["step"].is_monotonic_increasing and log["step"].iloc[-1] == runs[2][1].max_steps

    table, cells, fits = scaling.report(os.path.join(str(tmp_path), "t"), boot=50, tokens_per_param=0.5)
    assert len(table) == 8 and set(fits.preset) == {"tiny", "ff_1m"} and len(cells) == 4
    assert numpy.allclose(table.tokens / table.non_embedding_params, 0.5, rtol=0.2)  # the budget rule
    for name in ("summary.md", "scaling.png"):
        assert os.path.getsize(os.path.join(str(tmp_path), "t", name)) > 0
    assert "compute multiplier" in open(os.path.join(str(tmp_path), "t", "summary.md")).read()

    with pytest.raises(ValueError, match="max_steps"):  # another budget under the same study name is refused
        scaling.run_study(tiny_plan(str(tmp_path), tokens_per_param=1.0), progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--study", "x", "--shard", "3/2"], "--shard='3/2' is invalid"),
    (["--study", "x", "--seed", "4"], "--seed cannot be set here"),
    (["--study", "x", "--tokens_per_param", "0"], "tokens_per_param=0.0 is invalid"),
    (["--study", "x", "--seeds", "1", "1"], "seeds=[1, 1] is invalid"),
    (["--study", "a/b"], "study"),
])
def test_bad_arguments_get_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        scaling.main([*argv, "--folder", str(tmp_path), "--presets", "tiny", "--sizes", "10k"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_each_worker_gets_its_shard_and_no_report_once(monkeypatch):
    """The workers' commands drop --workers (either spelling) and the user's --no_report, then
    add --shard I/N and --no_report once each."""
    seen = []
    monkeypatch.setattr(scaling.runs, "run_workers", lambda commands, dirs: (seen.extend(commands), ([0, 0], 1.0))[1])
    scaling.train_in_workers(["--study", "x", "--workers=2", "--no_report", "--workers", "2"], [], 2, "study.py")
    assert [c[1:] for c in seen] == [["study.py", "--study", "x", "--shard", f"{i}/2", "--no_report"] for i in (0, 1)]


def test_two_workers_train_to_the_same_results_as_one_after_the_other(tmp_path, capsys):
    """--workers 2 trains the study's two runs in two processes at once: the same final losses
    as training them in this process one after the other, and an aggregate tokens/s."""
    argv = ["--presets", "tiny", "--sizes", "10k", "20k", "--seeds", "1", "--tokens_per_param", "0.5", "--no_progress",
            "--device", "cpu", "--compile", "off", "--autocast", "off", "--data_dir", FIXTURE_DATA, "--tokenizer",
            "bpe512", "--max_seq_len", "64", "--batch_size", "8", "--eval_tokens", "1024", "--boot", "20"]
    scaling.main(["--study", "serial", "--folder", str(tmp_path), *argv])
    capsys.readouterr()
    scaling.main(["--study", "parallel", "--folder", str(tmp_path), "--workers", "2", *argv])
    assert "2 workers:" in capsys.readouterr().out
    loss = lambda study: [pd.read_csv(tmp_path / study / f"tiny_{size}_s1" / "log_data.csv")["val_loss"].iloc[-1]
                          for size in ("10k", "20k")]
    numpy.testing.assert_allclose(loss("parallel"), loss("serial"), rtol=1e-4)
    with pytest.raises(SystemExit):
        scaling.main(["--study", "x", "--folder", str(tmp_path), "--workers", "2", "--shard", "0/2", *argv])
    assert "--workers and --shard cannot be combined" in capsys.readouterr().err
