"""A newcomer's first hour: the data folder is the reader's, runs repeat, defaults never touch
a shipped run, signals save, and the flags and messages say what they do."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import nbformat
import pytest
import torch
from safetensors.torch import load_file

import config
import data
import inference
import model_comparison
import presets
import runs
import train
from conftest import FIXTURE_DATA, ROOT, TINY_TRAIN_ARGS, cli_error, tiny_configs


def test_the_readers_data_folder_wins_over_the_one_a_run_stored(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "moved"
    shutil.copytree(tiny_run, run)
    stored = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**stored, "data_dir": "/nowhere/on/this/machine"}))
    monkeypatch.setenv("MMS_DATA_DIR", FIXTURE_DATA)
    assert runs.load_configs(str(run))[1].data_dir == ""  # "" = MMS_DATA_DIR's folder
    table, _ = model_comparison.compare([str(run)], str(tmp_path / "out"), eval_tokens=1024, progress=False)
    assert len(table) == 1
    (run / "train_config.json").write_text(json.dumps({**stored, "data_dir": FIXTURE_DATA}))
    monkeypatch.setenv("MMS_DATA_DIR", str(tmp_path))
    assert runs.load_configs(str(run))[1].data_dir == FIXTURE_DATA  # a stored folder that exists here wins
    monkeypatch.delenv("MMS_DATA_DIR")
    (run / "train_config.json").write_text(json.dumps({**stored, "data_dir": "/nowhere/on/this/machine"}))
    assert runs.load_configs(str(run), data_dir=FIXTURE_DATA)[1].data_dir == FIXTURE_DATA
    with pytest.raises(data.DataUnavailable, match=r"/nowhere/on/this/machine.*pass --data_dir \(or set MMS_DATA_DIR\)"):
        model_comparison.compare([str(run)], None, eval_tokens=1024, progress=False)


def test_the_default_training_path_repeats_bit_for_bit(tmp_path):
    """compile and autocast at their defaults ('auto'), on the CPU: two runs give the same weights."""
    weights = []
    for name in ("first", "second"):
        cfg, tcfg = tiny_configs(compile="auto", autocast="auto", max_steps=12, eval_interval=6,
                                 checkpoint_interval=12, out_dir=str(tmp_path), name=name)
        weights.append(load_file(os.path.join(train.train(cfg, tcfg, progress=False), "model.safetensors")))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_default_names_are_never_a_shipped_run():
    for name in presets.PRESETS:
        assert presets.get_preset(name)[1].name == f"my_{name}"
    assert not os.path.exists(os.path.join(ROOT, "trained", presets.get_preset("llama_1m")[1].name))


def test_overwrite_refuses_a_committed_run_unless_forced(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "trained" / "shipped").mkdir(parents=True)
    (repo / "trained" / "shipped" / "model_config.json").write_text("{}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "shipped"]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, capture_output=True)
    out = str(repo / "trained")
    with cli_error(capsys, "committed to the repository.*--force"):
        train.main([*TINY_TRAIN_ARGS, "--out_dir", out, "--name", "shipped", "--overwrite", "--max_steps", "2"])
    assert os.path.isfile(repo / "trained" / "shipped" / "model_config.json")
    train.main([*TINY_TRAIN_ARGS, "--out_dir", out, "--name", "shipped", "--overwrite", "--force", "--max_steps", "2"])
    assert os.path.isfile(repo / "trained" / "shipped" / "model.safetensors")


def test_a_wrong_data_folder_leaves_no_half_made_run(tmp_path, capsys):
    args = [*TINY_TRAIN_ARGS, "--out_dir", str(tmp_path), "--name", "fresh", "--max_steps", "2"]
    with cli_error(capsys, "pass --data_dir"):
        train.main([*args, "--data_dir", str(tmp_path / "typo")])
    assert not os.path.exists(tmp_path / "fresh")
    train.main(args)  # the corrected command just works
    assert os.path.isfile(tmp_path / "fresh" / "model.safetensors")
    assert not glob.glob(str(tmp_path / ".*.lock"))  # the lock file went with the run
    assert "saved the run to" in capsys.readouterr().out


def test_sigterm_to_a_training_process_saves_like_ctrl_c(tmp_path):
    child = subprocess.Popen([sys.executable, "train.py", *TINY_TRAIN_ARGS, "--out_dir", str(tmp_path), "--name", "t",
                              "--max_steps", "100000", "--eval_interval", "100000", "--checkpoint_interval", "100000"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = ""
    while "parameters" not in log:  # the banner: training has started
        log += child.stdout.readline()
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "interrupted: saved step" in out
    assert torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)["step"] > 0


def test_switch_fields_take_the_words_bool_fields_take():
    parser = config.argparse.ArgumentParser()
    config.add_config_arguments(parser)
    assert parser.parse_args(["--compile", "yes", "--autocast", "false"]).compile == "on"
    assert parser.parse_args(["--autocast", "false"]).autocast == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "sometimes"])


def test_inference_help_shows_defaults_and_long_requests_get_a_notice(tiny_run, capsys):
    with pytest.raises(SystemExit):
        inference.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default 0.05: on" in help_text and "default 0.8" in help_text and "default 1 = off" in help_text
    inference.main(["--model", tiny_run, "--max_new_tokens", "10000", "--temperature", "0", "--device", "cpu"])
    assert "note: --max_new_tokens 10000 exceeds the room" in capsys.readouterr().err


def test_run_names_resolve_under_trained_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "TRAINED", str(tmp_path))
    (tmp_path / "mine").mkdir()
    assert runs.find_run("mine") == str(tmp_path / "mine")
    assert runs.find_run(str(tmp_path)) == str(tmp_path)


def test_repetition_penalty_and_no_repeat_ngrams_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    history = torch.tensor([[0, 1, 0]])
    out = inference.penalize_repeats(logits, history, repetition_penalty=2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]  # seen: positive halved, negative doubled
    history = torch.tensor([[3, 2, 1, 3, 2]])  # "3 2" was followed by 1 before: with n = 3, 1 is banned
    out = inference.penalize_repeats(logits, history, no_repeat_ngram_size=3)
    assert out[0, 1] == float("-inf") and torch.isfinite(out[0, [0, 2, 3]]).all()
    with pytest.raises(ValueError, match="repetition_penalty=0"):
        inference.check_sampling(1.0, None, None, None, repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size=-1"):
        inference.check_sampling(1.0, None, None, None, no_repeat_ngram_size=-1)


def test_a_question_with_an_emoji_is_read_without_it():
    from momem.pipeline import check_question
    assert check_question("What does Wang \N{HONEYBEE} do for a living?") == "What does Wang do for a living?"
    with pytest.raises(ValueError, match="question="):
        check_question("\N{HONEYBEE}")


def test_every_notebook_has_a_parameters_cell():
    for path in glob.glob(os.path.join(ROOT, "*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert any("parameters" in c.metadata.get("tags", []) for c in cells if c.cell_type == "code"), path
