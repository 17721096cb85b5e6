import contextlib
import dataclasses
import math
import os
import re
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import config  # noqa: E402  (after ROOT is on the path)

# the Muon tests need torch.optim.Muon (torch >= 2.9); on an older torch (.ci/lower_bounds) they skip
needs_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
FIXTURE_DATA = os.path.join(ROOT, "tests", "fixtures", "stories")
SHARED_DATA = os.environ.get("MMS_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data", "tinystories")

needs_shared_data = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_DATA, "train.txt")),
    reason=f"TinyStories text not found at {SHARED_DATA} (set MMS_DATA_DIR to a folder with train.txt/valid.txt)")


# The quick tier, `python -m pytest -q -m "not slow"` (about a minute on 2 cores; the full suite about
# six): the tests that took 3 s or more in a full run with --durations are marked slow here (whole
# notebooks and README commands, subprocess crashes and resumes, sweeps, compiled decoding, the
# slowest leak detectors). Causality, cache parity and every other check stay in the quick tier.
SLOW = (
    "tests/test_notebooks.py::", "tests/test_readme.py::test_readme_commands_run_as_written",
    "tests/test_distributed.py::test_interrupted_two_process_run_resumes_exactly",
    "tests/test_distributed.py::test_two_gloo_processes_equal_one_process",
    "tests/test_first_hour.py::test_the_default_training_path_repeats_bit_for_bit",
    "tests/test_fuzz_cli.py::test_fuzz_comparison_cli", "tests/test_fuzz_cli.py::test_fuzz_inference_cli",
    "tests/test_fuzz_cli.py::test_fuzz_momem_cli", "tests/test_generation.py::test_compiled_decode_step_equals_eager",
    "tests/test_gpu_check.py::", "tests/test_hparam_search.py::test_memory_estimate_within_a_factor",
    "tests/test_hparam_search.py::test_out_of_memory_in_training_prunes_the_trial",
    "tests/test_hparam_search.py::test_tiny_study_end_to_end_then_resumes",
    "tests/test_hparam_search.py::test_two_workers_share_one_study",
    "tests/test_future_former.py::test_random_token_leak_detector", "tests/test_mamba2.py::test_random_token_leak_detector",
    "tests/test_memory_mosaics.py::test_random_token_leak_detector",
    "tests/test_reliability.py::test_disk_full_on_a_small_tmpfs_then_resume",
    "tests/test_reliability.py::test_sigkill_at_random_moments_loses_nothing",
    "tests/test_reliability.py::test_two_processes_started_with_one_name",
    "tests/test_scaling.py::test_two_workers_train_to_the_same_results_as_one_after_the_other",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


MODEL_FIELDS = [f.name for f in dataclasses.fields(config.ModelConfig) if f.init]
TRAIN_FIELDS = [f.name for f in dataclasses.fields(config.TrainConfig) if f.init]
# train.py on the tiny preset and the fixture stories, on the CPU, as the subprocess tests run it
TINY_TRAIN_ARGS = ["--preset", "tiny", "--device", "cpu", "--compile", "off", "--autocast", "off",
                   "--data_dir", FIXTURE_DATA, "--no_progress"]
FUZZ_SCALE = float(os.environ.get("MMS_FUZZ_SCALE", "1"))


def fuzz(examples):
    """hypothesis settings for the fuzz tests: `examples` inputs from fixed seeds (the same every
    run), or with MMS_FUZZ_SCALE=10 ten times as many from fresh random seeds (a deeper search)."""
    from hypothesis import HealthCheck, settings
    return settings(max_examples=max(1, int(examples * FUZZ_SCALE)), deadline=None,
                    suppress_health_check=list(HealthCheck), derandomize=FUZZ_SCALE == 1, database=None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_configs(**overrides):
    """(ModelConfig, TrainConfig) of the tiny preset, CPU, no compile, fixture data."""
    from presets import get_preset
    settings = dict(device="cpu", compile="off", autocast="off", data_dir=FIXTURE_DATA, batch_size=8,
                    eval_tokens=2048, eval_interval=10, checkpoint_interval=10, max_steps=20)
    settings.update(overrides)
    return get_preset("tiny", **settings)


def validated(model_cfg):
    """model_cfg after the architecture's own checks (modules.validate_config), as where a
    config enters (presets, a run's configs, build_model)."""
    import modules
    modules.validate_config(model_cfg)
    return model_cfg


def ln(v):
    return math.log(v)


def assert_causal(model, vocab_size, length=24, positions=(0, 5, 22)):
    """Changing the tokens after t never changes the logits at positions <= t (and does change later ones)."""
    model.eval()
    x = torch.randint(2, vocab_size, (2, length))
    base = model(x)[0]
    for t in positions:
        changed = x.clone()
        changed[:, t + 1:] = torch.randint(2, vocab_size, changed[:, t + 1:].shape)
        out = model(changed)[0]
        torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], atol=1e-5, rtol=0)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


def assert_cache_matches_full(model, vocab_size, length=20):
    """Prefill, a single token, a chunk, then one token at a time: logits equal the full pass."""
    model.eval()
    x = torch.randint(2, vocab_size, (2, length))
    full = model(x)[0]
    cache = model.new_cache(2)
    pieces = [model(x[:, :7], cache=cache)[0], model(x[:, 7:8], cache=cache)[0], model(x[:, 8:12], cache=cache)[0]]
    pieces += [model(x[:, t:t + 1], cache=cache)[0] for t in range(12, length)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def random_token_heldout_loss(model, vocab_size, steps=300):
    """Train on uniformly random tokens, return the loss on fresh random tokens. Nothing is
    learnable, so a causal model stays at ln V; one that peeks at token t+1 falls far below."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randint(vocab_size, (16, 33), generator=g)
        loss = model(x[:, :-1], x[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    held_out = torch.randint(vocab_size, (64, 33), generator=torch.Generator().manual_seed(99))
    with torch.no_grad():  # targets are the inputs shifted by one: a leak of t+1 into t shows here
        logits = model(held_out[:, :-1], held_out[:, 1:])[0]  # targets passed: a model must not use them
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), held_out[:, 1:].flatten()).item()


def assert_cli_error(code, stderr, match=""):
    """Exit code 2 and one `error: ...` line (matching `match`), the last thing printed (a progress
    bar may precede it)."""
    lines = stderr.strip().splitlines()
    assert code == 2 and lines and lines[-1].startswith("error: ") and re.search(match, lines[-1]), (code, stderr)
    assert sum(line.startswith("error: ") for line in lines) == 1, stderr


def run_cli(main, argv, capsys):
    """Run a CLI's main(argv): True when it succeeded, False after the error contract held (the
    outcome is counted in hypothesis's statistics)."""
    from hypothesis import event
    try:
        main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            assert_cli_error(e.code, capsys.readouterr().err)
            event("refused with one error line")
            return False
    event("succeeded")
    return True


@contextlib.contextmanager
def cli_error(capsys, match):
    """The command inside exits with code 2 after one `error: ...` line matching `match`."""
    with pytest.raises(SystemExit) as e:
        yield
    assert_cli_error(e.value.code, capsys.readouterr().err, match)


def sigterm_the_nth_run(monkeypatch, n):
    """Make the n-th train.train call of a study get SIGTERM at its first evaluation (it saves
    and stops, as under a scheduler); returns the real train.train to put back."""
    import signal
    import train
    real_train, calls = train.train, []

    def interrupted_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            kwargs["on_eval"] = lambda row: os.kill(os.getpid(), signal.SIGTERM)
        return real_train(*args, **kwargs)
    monkeypatch.setattr(train, "train", interrupted_train)  # what train_or_resume calls
    return real_train


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny run trained for 6 steps (checkpoints at 3 and 6), for tests that load a trained model."""
    import train
    cfg, train_cfg = tiny_configs(max_steps=6, eval_interval=3, checkpoint_interval=3,
                                  out_dir=str(tmp_path_factory.mktemp("runs")))
    return train.train(cfg, train_cfg, progress=False)
