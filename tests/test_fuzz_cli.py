"""Every command line, fuzzed with hypothesis: inference.py, model_comparison.py, hparam_search.py
and python -m momem. Whatever the arguments, the only outcomes are success or exit code 2 after
one `error: ...` line; any other exception or exit fails the test. Work that would take minutes
(a sweep's trials, training) is replaced by a recorder once every check before it has run."""
import os
import shutil

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import hparam_search
import inference
import model_comparison
import train
from momem import people
from conftest import FIXTURE_DATA, MODEL_FIELDS, TRAIN_FIELDS, fuzz, run_cli, tiny_configs


INT_TEXT = st.one_of(st.integers(-3, 6).map(str),
                     st.sampled_from(["0", "10000000000", str(2**70), "-99", "1.5", "x", "", "nan", " 3"]))
FLOAT_TEXT = st.one_of(st.floats(-2, 3).map(repr),
                       st.sampled_from(["nan", "inf", "-inf", "1e308", "1e-49", "1e-94", "5e-324", "-0.0", "x", "", "1,5"]))
ANY_TEXT = st.one_of(st.text(max_size=12), INT_TEXT, FLOAT_TEXT,
                     st.sampled_from(["\udcff", "../x", "a/b", "auto", "rope", "mm", "char", "true"]))


def options(choices):
    """argv of 0-3 `--name value` pairs drawn from {name: strategy of the value's text}."""
    pair = st.sampled_from(sorted(choices)).flatmap(lambda name: choices[name].map(lambda v: [name, v]))
    return st.lists(pair, max_size=3).map(lambda pairs: [x for p in pairs for x in p])


# --- inference.py ------------------------------------------------------------------------
INFERENCE_OPTIONS = {
    "--prompt": st.one_of(st.text(max_size=40), st.sampled_from(["", "\udcff\udcfe bytes", "word " * 100])),
    **{f"--{name}": INT_TEXT for name in ("num_samples", "max_new_tokens", "top_k", "seed")},
    **{f"--{name}": FLOAT_TEXT for name in ("temperature", "top_p", "min_p")},
    "--device": st.sampled_from(["cpu", "auto", "cuda", "mps", "tpu", ""]),
}
# one override of the trained model's config in a third of the command lines
CONFIG_OVERRIDE = st.one_of(st.just([]), st.just([]), st.sampled_from(MODEL_FIELDS).flatmap(
    lambda name: ANY_TEXT.map(lambda value: [f"--{name}", value])))


@fuzz(100)
@given(argv=options(INFERENCE_OPTIONS), override=CONFIG_OVERRIDE,
       model=st.sampled_from(["run"] * 5 + ["missing", "file", "empty"]))
def test_fuzz_inference_cli(argv, override, model, tiny_run, tmp_path_factory, capsys):
    folder = tmp_path_factory.getbasetemp()
    (folder / "a_file").write_text("not a run")
    (folder / "empty_run").mkdir(exist_ok=True)
    path = {"run": tiny_run, "missing": str(folder / "nope"), "file": str(folder / "a_file"),
            "empty": str(folder / "empty_run")}[model]
    if run_cli(inference.main, ["--model", path, *argv, *override], capsys):
        assert capsys.readouterr().out.endswith("\n")  # the stories were printed to the end


# --- model_comparison.py -----------------------------------------------------------------
@pytest.fixture(scope="module")
def comparison_runs(tiny_run, tmp_path_factory):
    """Runs to compare: the tiny run, one with another tokenizer, one with a damaged log, and a
    folder that is not a run."""
    out = tmp_path_factory.mktemp("compare")
    cfg, train_cfg = tiny_configs(max_steps=4, eval_interval=2, tokenizer="char", out_dir=str(out), name="char")
    runs = {"tiny": tiny_run, "char": train.train(cfg, train_cfg, progress=False)}
    damaged = shutil.copytree(tiny_run, out / "damaged")
    (damaged / "log_data.csv").write_text("step,tokens\n3,")
    runs.update(damaged=str(damaged), missing=str(out / "missing"), glob=str(out / "*"), empty="")
    (out / "not_a_run").mkdir()
    runs["not_a_run"] = str(out / "not_a_run")
    return runs


@fuzz(40)
@given(names=st.lists(st.sampled_from(["tiny"] * 3 + ["char"] * 3 + ["damaged", "missing", "glob", "empty", "not_a_run"]),
                      min_size=1, max_size=3),
       argv=options({"--topk": st.sampled_from(["1", "1,5", "5,1", "0", "-1", "1,,2", "x", "", "100000"]),
                     "--eval_tokens": INT_TEXT,
                     "--data_dir": st.sampled_from(["", FIXTURE_DATA, "/nonexistent", __file__]),
                     "--stories": st.sampled_from(["0", "2", "-1", "x", ""])}),
       out=st.sampled_from(["fresh", "a_file"]))
def test_fuzz_comparison_cli(names, argv, out, comparison_runs, tmp_path_factory, capsys):
    out_dir = tmp_path_factory.mktemp("cmp")
    if out == "a_file":
        (out_dir / "a_file").write_text("")
    out_dir = out_dir / out
    runs = [comparison_runs[n] for n in names]
    if "--stories" not in argv:  # 32 stories per run by default: the fuzz keeps its examples cheap
        argv = [*argv, "--stories", "0"]
    if run_cli(model_comparison.main, [*runs, "--out", str(out_dir), *argv], capsys):
        assert (out_dir / "summary.md").exists() and (out_dir / "curves.png").exists()


def test_mixed_tokenizers_compare_in_bits_per_character(comparison_runs, tmp_path):
    """Runs with different tokenizers: curves in bits per character, no per-window deltas (their
    windows differ), and the summary says which columns compare."""
    table, fig = model_comparison.compare([comparison_runs["tiny"], comparison_runs["char"]], str(tmp_path),
                                          ks=(1,), progress=False)
    assert list(table["tokenizer"]) == ["bpe512", "char"] and "delta_loss" not in table
    assert fig.axes[0].get_ylabel() == "loss (bits per character)"
    assert "different tokenizers" in (tmp_path / "summary.md").read_text()


# --- hparam_search.py --------------------------------------------------------------------
class Validated(Exception):
    """Raised in place of opening the study: every check before it passed."""


VALID_SPACES = ["lr=log:1e-3:3e-2", "dim=choice:32,64", "num_layers=int:1:3", "warmup_frac=float:0:0.1",
                "tokenizer=choice:char,byte"]
SPACE = st.one_of(st.sampled_from(VALID_SPACES), st.tuples(
    st.sampled_from(["lr", "dim", "tokenizer", "num_layers", "warmup_frac", "bogus", ""]),
    st.sampled_from(["log", "float", "int", "choice", "", "x"]),
    st.lists(st.sampled_from(["1e-3", "0.1", "0", "-1", "2", "64", "char", "nan", "inf", "", "x"]), max_size=3),
).map(lambda t: f"{t[0]}={t[1]}:" + ("," if t[1] == "choice" else ":").join(t[2])))
HPARAM_OPTIONS = {
    "--study": st.sampled_from(["s", "../escape", "a/b", "", ".", "x" * 300]),
    "--preset": st.sampled_from(["tiny", "llama_1m", "nope"]),
    "--space": SPACE,
    "--set": st.one_of(st.sampled_from(["batch_size=4", "compile=off", "tokenizer=char"]),
                       st.tuples(st.sampled_from(MODEL_FIELDS + TRAIN_FIELDS + ["bogus"]), ANY_TEXT).map("=".join)),
    "--trials": INT_TEXT, "--workers": INT_TEXT, "--tokens": FLOAT_TEXT, "--memory_limit_gb": FLOAT_TEXT,
    "--storage": st.sampled_from(["sqlite", "journal", "redis"]),
}


@fuzz(150)
@given(argv=options(HPARAM_OPTIONS), space=SPACE)
def test_fuzz_hparam_search_cli(argv, space, monkeypatch, capsys):
    def reached(study, storage, folder, **kwargs):  # what passed the checks is safe to run
        assert os.path.dirname(folder) == hparam_search.SWEEPS and storage in ("sqlite", "journal")
        event("passed every check")
        raise Validated
    monkeypatch.setattr(hparam_search, "open_study", reached)
    try:
        run_cli(hparam_search.main, ["--study", "s", "--space", space, "--set", "device=cpu", *argv], capsys)
    except Validated:
        pass


# --- python -m momem ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def momem_main(tmp_path_factory):
    """momem's main with its memory store in a temporary folder and one pipeline loaded once."""
    import momem.__main__ as cli
    from momem.pipeline import Pipeline, open_store
    store = tmp_path_factory.mktemp("momem_store") / "memory.sqlite"
    pipeline = Pipeline()
    patch = pytest.MonkeyPatch()
    patch.setattr(cli, "Pipeline", lambda: pipeline)
    patch.setattr(cli, "open_store", lambda path=None, folder=None: open_store(path or str(store), folder))
    yield cli.main
    patch.undo()


NAMES = st.one_of(st.text(max_size=30), st.sampled_from(["Ada Lovelace", "Ada", "", " ", "A;B C", "\udcff x"]))
MOMEM_COMMANDS = st.one_of(
    st.tuples(st.just("ask"), st.one_of(st.text(max_size=80), st.sampled_from(
        ["What is Ada Lovelace's favourite movie?", "", "?" * 65, "\udcff", "Who is Zzz Qqq?"]))),
    st.tuples(st.just("add"), NAMES).flatmap(lambda a: options(
        {**{f"--{c}": ANY_TEXT for c in people.CATEGORIES}, "--update": st.just("")}).map(
        lambda argv: [*a, *[x for x in argv if x != ""]])),
    st.tuples(st.just("eval")).flatmap(lambda a: options(
        {"--splits": st.sampled_from(["test", "ood,unknown", "", ",", "nope", "test,train"]),
         "--limit": st.sampled_from(["1", "0", "-1", "x", "1.5", ""])}).map(lambda argv: [*a, *argv])),
    st.tuples(st.just("train"), st.sampled_from(["ner", "all", "nope", ""])).flatmap(lambda a: options(
        {"--max_steps": INT_TEXT}).map(lambda argv: [*a, *argv])),
    st.tuples(st.just("data")).flatmap(lambda a: options({"--seed": INT_TEXT}).map(lambda argv: [*a, *argv])),
    st.lists(ANY_TEXT, max_size=2))


@fuzz(60)
@given(argv=MOMEM_COMMANDS)
def test_fuzz_momem_cli(argv, momem_main, monkeypatch, tmp_path_factory, capsys):
    argv = list(argv)
    if argv[:1] == ["data"]:
        argv += ["--out", str(tmp_path_factory.mktemp("momem_data"))]
    if argv[:1] == ["eval"]:
        argv += ["--out", str(tmp_path_factory.mktemp("momem_eval"))]
        if "--limit" not in argv:
            argv += ["--limit", "1"]  # a question per split keeps the fuzz fast; --limit itself is fuzzed too
    calls = []
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(train, "resume_run", lambda *a, **k: calls.append(a))
    if run_cli(momem_main, argv, capsys) and argv[:1] == ["train"]:
        assert calls  # training was started (here: recorded) for the module(s)
