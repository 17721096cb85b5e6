"""Every shell command in the README and the docs/ pages runs as written (with tiny overrides
appended where the real one takes minutes), or is listed here with the reason it is not run. A
command that no rule below covers fails the test: add it here when you add it there. The README
stays a front door (at most 300 lines), and every relative link of the README and docs/ leads
to a file that exists."""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import FIXTURE_DATA, ROOT, SHARED_DATA

README = os.path.join(ROOT, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))  # the README's commands run first
SHIPPED = os.path.isfile(os.path.join(ROOT, "trained", "llama_1m", "model.safetensors"))
TINY_TRAINING = ["--max_steps", "2", "--eval_interval", "1", "--checkpoint_interval", "1", "--batch_size", "2",
                 "--max_seq_len", "64", "--eval_tokens", "1024", "--compile", "off", "--no_progress"]

# (pattern the command starts with, extra arguments appended | the reason it is not run)
RULES = [
    (r"pip install", "installing is .ci/run's first step"),
    (r"python -m pytest", "the test suite itself"),
    (r"export MMS_DATA_DIR", "sets the data folder; the commands below run with MMS_DATA_DIR set"),
    (r"python inference\.py", ["--max_new_tokens", "8"]),
    (r"python train\.py --help", []),
    (r"python train\.py --resume", []),
    (r"python train\.py", ["--out_dir", "{tmp}", *TINY_TRAINING]),
    (r"python model_comparison\.py", ["--eval_tokens", "2048", "--stories", "4"]),
    (r"python hparam_search\.py", "an 8-trial study of 3M tokens each (hours on a CPU) that would extend the "
                                  "committed study; tests/test_hparam_search.py runs tiny studies end to end"),
    (r"python scaling\.py", "an 18-run study (44 minutes on 2 CPU cores); tests/test_scaling.py runs a tiny "
                            "2 x 2 x 2 study end to end through the same functions"),
    (r"python bench/", "benchmarks print timings and take minutes; they are not tests"),
    (r"python probes\.py", "a grid of probe runs (minutes each on 2 CPU cores); tests/test_probes.py runs a tiny "
                           "2 x 2 grid end to end through the same functions"),
    (r"torchrun", "needs several GPUs or nodes; tests/test_distributed.py trains with two gloo processes"),
    (r"python -m momem train", "trains the three MoMeM modules for about 47 minutes; tests/test_momem.py "
                               "trains tiny ones through the same code"),
    (r"python -m momem add", "writes a person into the user's memory store; tests/test_momem.py adds to a temporary one"),
    (r"python -m momem eval", ["--limit", "8"]),
    (r"python -m momem", []),
]


def readme_commands():
    """Every command line of the ```bash blocks of the README and docs/ (continuation lines
    joined, comments cut), page by page."""
    text = "\n".join(open(page, encoding="utf-8").read() for page in PAGES)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def rule_for(words):
    line = " ".join(words)
    return next(((p, action) for p, action in RULES if re.match(p, line)), (None, None))


def test_every_readme_command_has_a_rule():
    missing = [" ".join(w) for w in readme_commands() if rule_for(w)[0] is None]
    assert not missing, f"README commands without a rule in tests/test_readme.py: {missing}"


def runnable():
    """The commands to run, each once (a docs page may repeat the README's), in page order."""
    commands = [w for w in readme_commands() if isinstance(rule_for(w)[1], list)]
    return [w for i, w in enumerate(commands) if w not in commands[:i]]


@pytest.mark.skipif(not SHIPPED, reason="the shipped models (trained/) are not present")
def test_readme_commands_run_as_written(tmp_path):
    data = SHARED_DATA if os.path.isfile(os.path.join(SHARED_DATA, "train.txt")) else FIXTURE_DATA
    env = dict(os.environ, MMS_DATA_DIR=data, OMP_NUM_THREADS="2")
    for words in runnable():
        _, extra = rule_for(words)
        argv = [a.replace("trained/my_", f"{tmp_path}/my_") for a in words]  # runs the README trains, not the shipped
        argv = [sys.executable if a == "python" else a for a in argv]
        argv = [a.replace("comparison/momem", str(tmp_path / "momem_report")) for a in argv]
        argv += [a.format(tmp=tmp_path) for a in extra]
        if argv[1:2] == ["model_comparison.py"]:
            argv[argv.index("--out") + 1] = str(tmp_path / "comparison")  # the shipped figures stay as they are
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(words)}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}"


def test_the_readme_is_a_front_door():
    lines = open(README, encoding="utf-8").read().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move reference material to docs/"


def test_every_link_leads_somewhere():
    broken = []
    for page in PAGES:
        text = open(page, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
            if not os.path.exists(path):
                broken.append(f"{os.path.relpath(page, ROOT)} -> {target}")
    assert not broken, f"links to nothing: {broken}"


def test_no_page_speaks_of_what_a_reader_cannot_see():
    words = re.compile(r"\b(this session|a later session|the session|this wave|in this wave|seed 00\d)\b", re.I)
    found = [f"{os.path.relpath(page, ROOT)}: {m.group(0)}" for page in PAGES
             for m in words.finditer(open(page, encoding="utf-8").read())]
    assert not found, found
