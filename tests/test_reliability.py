"""Bad input gets one clear error; a crash loses nothing. Property-based fuzzing (hypothesis) of
configs, config files, the train command line, generation and training data (the other command
lines: test_fuzz_cli.py), plus injected faults: damaged files, malicious pickles, a full disk,
two runs of one name, and SIGKILL at random moments."""
import json
import math
import os
import pathlib
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import presets
import runs
import modules
import inference
import model_comparison
import tools
import train
from conftest import (FIXTURE_DATA, MODEL_FIELDS, ROOT, TINY_TRAIN_ARGS, TRAIN_FIELDS, assert_cli_error, cli_error,
                      fuzz, run_cli, tiny_configs)

ANY_VALUE = st.one_of(
    st.integers(1, 8), st.floats(0, 1),  # often valid: so valid combinations are tried too
    st.integers(min_value=-10**12, max_value=10**12), st.sampled_from([0, -1, 1, 10**9, 10**7, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=12),
    st.sampled_from(["auto", "on", "off", "rope", "gpt", "mm", "cosine", "../escape", "a/b", ""]))
FIELDS = MODEL_FIELDS + TRAIN_FIELDS


def assert_clear(error, *names):
    """One line naming one of `names` (a field or argument) and saying what is allowed."""
    text = str(error)
    assert "\n" not in text.strip() and any(n in text for n in names), text
    assert "invalid" in text or "must" in text or "needs" in text or "unknown" in text, text


@fuzz(400)
@given(fields=st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, min_size=1, max_size=3))
def test_fuzz_every_config_field(fields):
    """Any values of any 1-3 fields at once (so also incompatible combinations): a valid config
    or one ValueError naming a field. What passes is then checked to fit in memory without
    allocating (huge sizes are refused, never built)."""
    try:
        model_cfg, train_cfg = presets.get_preset("tiny", **fields)
    except ValueError as e:
        assert_clear(e, *fields, "model_type=")  # an architecture's own check may name a related field
        event("refused")
        return
    event("valid config")
    try:
        modules.check_weights_fit(model_cfg)
        tools.check_fits(modules.estimate_training_memory(model_cfg, train_cfg), torch.device("cpu"), "training", "")
    except ValueError as e:
        assert "needs about" in str(e)


@fuzz(150)
@given(keys=st.dictionaries(st.one_of(st.sampled_from(MODEL_FIELDS), st.text(min_size=1, max_size=10)), ANY_VALUE,
                            max_size=3),
       dropped=st.sets(st.sampled_from(MODEL_FIELDS), max_size=3),
       replaced=st.one_of(st.none(), st.none(), st.sampled_from(["[1, 2]", '"x"', "null", "3", '{"dim": 1', ""]),
                          st.binary(max_size=20)))
def test_fuzz_model_config_json(keys, dropped, replaced, tiny_run, tmp_path_factory):
    """A trained run's model_config.json with unknown, mistyped or missing keys, or replaced by
    other JSON or bytes: the model loads (a dropped key whose default fits the weights), or one
    ValueError naming model_config.json or model.safetensors and what is allowed."""
    run = tmp_path_factory.getbasetemp() / "json_fuzz_run"
    if not run.exists():
        shutil.copytree(tiny_run, run)
    saved = json.loads((pathlib.Path(tiny_run) / "model_config.json").read_text())
    edited = {k: v for k, v in {**saved, **keys}.items() if k not in dropped}
    path = run / "model_config.json"
    if replaced is None:
        path.write_text(json.dumps(edited))
    else:
        path.write_bytes(replaced if isinstance(replaced, bytes) else replaced.encode())
    try:
        inference.load_model(str(run), device="cpu")
    except ValueError as e:
        text = str(e)
        assert "\n" not in text.strip() and ("model_config.json" in text or "model.safetensors" in text
                                             or any(f"{k}=" in text for k in edited)), text
        event("refused")
        return
    event("loaded")


@fuzz(150)
@given(fields=st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.text(max_size=10), st.sampled_from(
    ["nan", "inf", "-1", "0", "1e30", "10000000", "true", "maybe", "../../x"])), min_size=1, max_size=3))
def test_fuzz_train_cli(fields, monkeypatch, capsys):
    """`python train.py --FIELD TEXT ...` (1-3 fields): trains (here: the call is recorded) or
    exits 2 with one line."""
    calls = []
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(a))
    if run_cli(train.main, ["--preset", "tiny", *[x for name, text in fields.items() for x in (f"--{name}", text)]],
               capsys):
        assert len(calls) == 1


@fuzz(120)
@given(prompts=st.one_of(st.lists(st.text(max_size=30), max_size=4), st.just([]), st.just("a string"),
                         st.just(["\udcff broken"]), st.just(["word " * 200])),
       max_new_tokens=st.one_of(st.integers(-2, 5), st.just(10**9), st.just(2.5)),
       temperature=st.one_of(st.floats(-1, 3), st.sampled_from([math.nan, math.inf, 5e-324, 1e-49, 1e308])),
       top_k=st.one_of(st.none(), st.integers(-1, 5000), st.just(1.5)),
       top_p=st.one_of(st.none(), st.floats(-0.5, 1.5), st.sampled_from([math.nan, 1e-94, 5e-324])),
       min_p=st.one_of(st.none(), st.floats(-0.5, 1.5)))
def test_fuzz_generate(tiny_run, prompts, max_new_tokens, temperature, top_k, top_p, min_p):
    """Any prompts and sampling arguments: continuations, or one ValueError naming the argument."""
    model, tok, _ = load_cached(tiny_run)
    try:
        out = inference.generate(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k, top_p=top_p, min_p=min_p, seed=0)
    except ValueError as e:
        assert_clear(e, "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "max_seq_len")
        return
    assert len(out) == len(prompts) and all(isinstance(t, str) for t in out)


def test_tiny_temperatures_and_top_p_sample_the_most_likely_token():
    """The limits temperature -> 0 and top_p -> 0 are greedy, down to subnormal floats (found by
    fuzzing: temperature 1e-49 made the probabilities NaN; top_p 1e-94 dropped every token)."""
    logits = torch.randn(4, 50) * 10
    for temperature in (1e-30, 1e-49, 5e-324):
        assert torch.equal(inference.sample_next(logits, temperature), logits.argmax(dim=-1))
    for top_p in (1e-30, 1e-94, 5e-324):  # ... and so is top_p -> 0 (1e-94 rounds to 0 in float32: nothing was kept)
        assert torch.equal(inference.sample_next(logits, 1.0, top_p=top_p), logits.argmax(dim=-1))


_loaded = {}


def load_cached(run):
    if run not in _loaded:
        _loaded[run] = inference.load_model(run, device="cpu")
    return _loaded[run]


@pytest.mark.parametrize("argv", [["--num_samples", "0"], ["--num_samples", "-3"], ["--num_samples", "10000000000"],
                                  ["--top_k", "0"], ["--temperature", "nan"], ["--top_p", "2"], ["--dim", "x"],
                                  ["--max_new_tokens", "abc"], ["--model", "/nonexistent"], ["--bogus"]])
def test_inference_cli_errors(argv, tiny_run, capsys):
    argv = argv if "--model" in argv else ["--model", tiny_run, *argv]
    with cli_error(capsys, ""):
        inference.main(argv)


def test_overrides_that_change_the_shape_say_so(tiny_run):
    with pytest.raises(ValueError, match=r"overrides \{'dim': 64\} change the model's shape.*size mismatch for embed"):
        inference.load_model(tiny_run, device="cpu", dim=64)
    with pytest.raises(ValueError, match=r"overrides \{'num_layers': 3\}.*missing \d+ key\(s\): layers\.2\."):
        inference.load_model(tiny_run, device="cpu", num_layers=3)


def test_damaged_logs_and_missing_runs_in_comparison(tiny_run, tmp_path, capsys):
    """model_comparison.py on missing runs, empty / header-only / cut / foreign logs: exit 2, one line."""
    cases = {"empty": "", "header": "step,tokens,val_loss\n", "cut": None, "foreign": "a,b\n1,2\n"}
    for name, text in cases.items():
        run = tmp_path / name
        shutil.copytree(tiny_run, run)
        log = run / "log_data.csv"
        log.write_text(text if text is not None else log.read_text()[:-40].rsplit("\n", 1)[0][:-5])
        if name == "cut":  # only the last row is cut: the complete rows are still compared
            assert len(runs.read_log(str(run))) >= 1
            continue
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            runs.read_log(str(run))
        assert "log_data.csv" in str(e.value)
    for argv in (["/no/such/run"], [str(tmp_path / "empty")], [tiny_run, "--topk", "0"]):
        with cli_error(capsys, ""):
            model_comparison.main([*argv, "--out", str(tmp_path / "cmp")])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the malicious file's own protocol
def test_malicious_and_damaged_checkpoints(tiny_run, tmp_path):
    """A pickle that would run code is refused (weights_only) and runs nothing; a truncated or
    bit-flipped checkpoint or weights file, weights missing a tensor or made for another
    architecture, and a broken config each get a clear message naming the file."""
    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    ckpt = os.path.join(run, "checkpoint.pt")
    marker = tmp_path / "pwned"
    with open(ckpt, "wb") as f:
        pickle.dump({"model": _Payload(str(marker))}, f)
    with pytest.raises(ValueError, match="checkpoint.pt.*never loaded"):
        train.resume_run(run, progress=False)
    assert not marker.exists()
    data = open(os.path.join(tiny_run, "checkpoint.pt"), "rb").read()
    open(ckpt, "wb").write(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="checkpoint.pt is damaged"):
        train.resume_run(run, progress=False)
    embedding = torch.load(os.path.join(tiny_run, "checkpoint.pt"), weights_only=True)["model"]["embed.weight"]
    at = data.index(embedding.numpy().tobytes())  # one flipped bit in a tensor: torch.load alone would not notice
    open(ckpt, "wb").write(data[:at] + bytes([data[at] ^ 1]) + data[at + 1:])
    with pytest.raises(ValueError, match="checkpoint.pt is damaged.*checksum"):
        train.resume_run(run, progress=False)

    weights, good = os.path.join(run, "model.safetensors"), open(os.path.join(tiny_run, "model.safetensors"), "rb").read()
    for damaged, match in ((good[:100], "model.safetensors is unreadable"),
                           (good[:-1] + bytes([good[-1] ^ 1]), "model.safetensors is damaged.*checksum")):
        open(weights, "wb").write(damaged)
        with pytest.raises(ValueError, match=match):
            inference.load_model(run)
    from safetensors.torch import load_file, save_file
    tensors = load_file(os.path.join(tiny_run, "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if k != "final_norm.weight"}, weights)  # a key missing
    with pytest.raises(ValueError, match="does not match model_config.json.*missing 1 key.*final_norm.weight.*same run"):
        inference.load_model(run)
    shutil.copy(os.path.join(tiny_run, "model.safetensors"), weights)
    cfg_path = os.path.join(run, "model_config.json")
    cfg = json.loads(open(cfg_path).read())
    open(cfg_path, "w").write(json.dumps({**cfg, "model_type": "mm", "pos_encoding": "none",  # another architecture
                                          "mlp_hidden_mult": 4.0}))  # (tiny's MLP width is no Memory Mosaics knob)
    with pytest.raises(ValueError, match="belongs to another architecture.*model_type='mm'.*trained with model_type='gpt'"):
        inference.load_model(run)
    open(cfg_path, "w").write('{"dim": 1')
    with pytest.raises(ValueError, match="model_config.json"):
        inference.load_model(run)


DISK_FULL_CHILD = """
import os, resource, signal, sys, torch, tools
path = sys.argv[1]
tools.atomic_save(lambda p: torch.save({"w": torch.zeros(4)}, p), path)
before = open(path, "rb").read()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    tools.atomic_save(lambda p: torch.save({"w": torch.zeros(100_000)}, p), path)
except tools.SaveError as e:
    assert open(path, "rb").read() == before and os.listdir(os.path.dirname(path)) == ["checkpoint.pt"]
    print(e)
"""


def test_disk_full_keeps_the_previous_checkpoint(tmp_path):
    """A write that fails for want of space (RLIMIT_FSIZE in a child process: writes past 4 KiB
    fail) raises SaveError naming the file, keeps the previous file intact, leaves no temp file."""
    done = subprocess.run([sys.executable, "-c", DISK_FULL_CHILD, str(tmp_path / "checkpoint.pt")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "could not write" in done.stdout and "checkpoint.pt" in done.stdout and "previous version is kept" in done.stdout


@pytest.mark.parametrize("fault, match", [
    ("empty train.txt", "train.txt.*holds no stories"), ("tiny train.txt", "train.txt has 4 tokens, too few"),
    ("non-UTF-8 train.txt", "train.txt is not UTF-8"), ("missing valid.txt", "lacks \\['valid.txt'\\]"),
    ("missing train.txt", "lacks \\['train.txt'\\]")])
def test_training_data_faults_name_the_file(fault, match, tmp_path, monkeypatch, capsys):
    import data
    monkeypatch.setattr(data, "CACHE_DIR", str(tmp_path / "cache"))
    folder = shutil.copytree(FIXTURE_DATA, tmp_path / "stories")
    if fault == "empty train.txt":
        (folder / "train.txt").write_text("")
    elif fault == "tiny train.txt":
        (folder / "train.txt").write_text("One day.\n<|endoftext|>\n")
    elif fault == "non-UTF-8 train.txt":
        with open(folder / "train.txt", "ab") as f:
            f.write(b"Hello \xff\xfe world\n<|endoftext|>\n")
    else:
        (folder / fault.split()[1]).unlink()
    with cli_error(capsys, match):
        train.main([*TINY_TRAIN_ARGS, "--data_dir", str(folder), "--out_dir", str(tmp_path / "out"), "--max_steps", "2"])


STORY = "Tom had a red ball. He threw it to his dog, and the dog ran after it all day."
SPLIT_TEXT = st.one_of(
    st.text(max_size=200), st.binary(max_size=200),
    st.lists(st.sampled_from([STORY, STORY * 8, "", " ", "<|endoftext|>", "\u00e9\u4e2d\U0001f600", "\x00"]),
             max_size=12).map("\n<|endoftext|>\n".join))


@fuzz(80)
@given(train_text=SPLIT_TEXT, valid_text=SPLIT_TEXT)
def test_fuzz_training_data(train_text, valid_text, tmp_path_factory, monkeypatch):
    """Any train.txt and valid.txt (empty, tiny, random text or bytes, stories with and without
    separators): the dataset is ready to train, or one error naming the file at fault."""
    import data
    folder = tmp_path_factory.mktemp("corpus")
    monkeypatch.setattr(data, "CACHE_DIR", str(folder / "cache"))
    for name, text in (("train.txt", train_text), ("valid.txt", valid_text)):
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    model_cfg, train_cfg = tiny_configs(data_dir=str(folder))
    try:
        dataset = data.get_dataset(model_cfg, train_cfg)
        dataset.describe()
    except ValueError as e:
        assert "\n" not in str(e).strip() and ("train.txt" in str(e) or "valid.txt" in str(e)), e
        event("refused")
        return
    batch = dataset.train_batch(2, torch.Generator().manual_seed(0))
    assert batch["tokens"].shape == (2, model_cfg.max_seq_len) and len(list(dataset.val_batches(4))) >= 1
    event("ready to train")


def _can_mount_tmpfs():
    """Whether this machine lets an unprivileged user mount a tmpfs in a user namespace."""
    import tempfile
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        return subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder],
                              capture_output=True).returncode == 0


TMPFS_SCRIPT = """
set -u
mount -t tmpfs -o size="$SIZE" tmpfs "$MNT" || exit 9
"$PY" train.py $ARGS --out_dir "$MNT"; echo "first exit $?"
"$PY" -c "import sys, torch; print('checkpoint step', torch.load(sys.argv[1], weights_only=True)['step'])" "$MNT/my_tiny/checkpoint.pt"
ls -A "$MNT/my_tiny" | tr '\\n' ' '; echo
mount -o remount,size=64m "$MNT"
"$PY" train.py --resume "$MNT/my_tiny" --no_progress; echo "resume exit $?"
cp "$MNT/my_tiny/model.safetensors" "$OUT"
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` (user namespaces) to mount a small tmpfs")
def test_disk_full_on_a_small_tmpfs_then_resume(tmp_path):
    """Training whose out_dir is a tmpfs too small for a second checkpoint: the save fails with
    one clear line (exit 2), the previous checkpoint is intact and no temporary file is left; with
    space freed (the tmpfs grown), the run resumes and ends with the weights of an
    uninterrupted run, bit for bit."""
    from safetensors.torch import load_file
    args = " ".join(TINY_TRAIN_ARGS) + " --max_steps 20 --eval_interval 10 --checkpoint_interval 10 --batch_size 8 " \
        "--eval_tokens 2048"
    done = subprocess.run([sys.executable, "train.py", *args.split(), "--out_dir", str(tmp_path / "ref")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pages = {f.name: -(-f.stat().st_size // 4096) * 4096 for f in (tmp_path / "ref" / "my_tiny").iterdir()}
    # room for every file once and 8 KiB of log growth, but not for a second full checkpoint, which
    # a save writes beside the old one before the rename. The step-0 checkpoint holds no Adam
    # moments yet (a third of the size), so step 10's save fits and step 20's is the one that fails.
    size = sum(pages.values()) + 8192 + pages["checkpoint.pt"] // 2
    (tmp_path / "mnt").mkdir()
    env = dict(os.environ, SIZE=str(size), MNT=str(tmp_path / "mnt"), PY=sys.executable, ARGS=args, OUT=str(tmp_path))
    done = subprocess.run(["unshare", "-rm", "bash", "-c", TMPFS_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    out, err = done.stdout, done.stderr
    assert "first exit 2" in out, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could not write" in errors[0] and "checkpoint.pt" in errors[0], err
    assert "no space left on its disk" in errors[0] and "previous version is kept" in errors[0], errors
    assert "checkpoint step 10" in out and ".tmp" not in out, out
    assert "resume exit 0" in out, (out, err)
    ref, got = load_file(tmp_path / "ref" / "my_tiny" / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_two_runs_of_one_name_cannot_collide(tmp_path):
    cfg, train_cfg = tiny_configs(max_steps=2, out_dir=str(tmp_path))
    with runs.run_lock(str(tmp_path), train_cfg.name):
        with pytest.raises(FileExistsError, match="in use by another process"):
            train.train(cfg, train_cfg, progress=False)
    train.train(cfg, train_cfg, progress=False, overwrite=True)  # the lock is free again


def test_two_processes_started_with_one_name(tmp_path):
    """Two `train.py` processes of one name at once: one trains, the other stops with one error
    line (the lock, or the finished folder if it came late), and the run equals a lone run's."""
    from safetensors.torch import load_file
    args = [*TINY_TRAIN_ARGS, "--max_steps", "30", "--eval_interval", "10"]

    def start(out):
        return subprocess.Popen([sys.executable, "train.py", *args, "--out_dir", str(out)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    both = [start(tmp_path / "shared"), start(tmp_path / "shared")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in both]
    assert sorted(code for code, _ in results) == [0, 2], results
    error = next(err for code, err in results if code == 2)
    assert_cli_error(2, error, "in use by another process|already exists")
    alone = start(tmp_path / "alone")
    assert alone.wait(timeout=300) == 0
    a, b = load_file(tmp_path / "alone" / "my_tiny" / "model.safetensors"), load_file(tmp_path / "shared" / "my_tiny" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_names_cannot_escape_the_output_folder():
    for name in ("../x", "a/b", "..", ".", "/etc", "x\\y", ""):
        with pytest.raises(ValueError, match="name="):
            tiny_configs(name=name)


TRAIN_CHILD = """
import sys, presets, train
cfg, tcfg = presets.get_preset("tiny", max_steps=240, eval_interval=40, checkpoint_interval=3, compile="off",
                              autocast="off", data_dir=sys.argv[2], out_dir=sys.argv[1], name="crash")
train.train(cfg, tcfg, resume=sys.argv[3] == "resume", progress=False)
"""


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Kill training with SIGKILL at random moments (in the middle of steps, evaluations and
    checkpoint writes) and resume each time: the final weights equal an uninterrupted run's
    bit for bit, and the log has every evaluation exactly once."""
    from safetensors.torch import load_file

    def launch(out, mode):
        return subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, str(out), FIXTURE_DATA, mode], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    reference = launch(tmp_path / "ref", "new")
    assert reference.wait() == 0, reference.stderr.read()
    rng, kills, out = random.Random(0), 0, tmp_path / "killed"
    mode = "new"
    while True:
        proc = launch(out, mode)
        start = time.time()
        ckpt = out / "crash" / "checkpoint.pt"
        while proc.poll() is None and time.time() - start < 120 and not (ckpt.exists() and ckpt.stat().st_mtime > start):
            time.sleep(0.02)  # until this process has written a checkpoint: it is training
        if kills < 6:  # then a random moment: inside a step, an evaluation or a checkpoint write
            time.sleep(rng.uniform(0.0, 0.8))
        if kills >= 6 or proc.poll() is not None:
            assert proc.wait(timeout=300) == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mode = "resume"
    assert kills >= 3, f"only {kills} kills landed; the run finished too fast to test"
    ref, got = load_file(tmp_path / "ref" / "crash" / "model.safetensors"), load_file(out / "crash" / "model.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    steps = [int(r.split(",")[0]) for r in (out / "crash" / "log_data.csv").read_text().splitlines()[1:]]
    assert steps == list(range(40, 241, 40)), steps


SLOW_SAVE_CHILD = """
import sys, time, tools
def save(path):  # half a checkpoint on disk, then the process hangs inside the save
    open(path, "wb").write(b"x" * 100_000)
    print("writing", flush=True)
    time.sleep(120)
tools.atomic_save(save, sys.argv[1])
"""


def test_sigkill_during_a_save_leaves_no_temporary_file_after_resume(tiny_run, tmp_path):
    """kill -9 in the middle of a checkpoint write leaves checkpoint.pt.<pid>.tmp; resuming the
    run removes every such orphan (three kills, three files, then none)."""
    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE_CHILD, os.path.join(run, "checkpoint.pt")], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    orphans = lambda: [f for f in os.listdir(run) if f.endswith(".tmp")]
    assert len(orphans()) == 3
    train.resume_run(run, progress=False)
    assert orphans() == []
