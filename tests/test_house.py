"""The house (see the README's developer section): rooms in layers that import only downward,
a torch-free config, one list of choices, no set-but-ignored field, and the bad input found
while laying it out."""
import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import typing

import pytest
import torch

import config
import inference
import modules
import presets
import runs
import tools
import train
from conftest import ROOT, TINY_TRAIN_ARGS, assert_cli_error, tiny_configs

# every room's layer: each imports only from its own layer or below, and no two rooms import each other
LAYERS = {
    "config": 0, "tools": 0,
    "data": 1, "modules": 1, "metrics": 1, "distributed": 1, "tasks": 1,
    "runs": 2, "presets": 2, "trackers": 2,
    "train": 3, "inference": 3,
    "model_comparison": 4, "hparam_search": 4, "scaling": 4, "export": 4, "probes": 4,
    "momem": 5, "bench": 5, "notebooks": 5,
}


STRING_IMPORT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # "package.module:Class", as data.DATASETS holds


def rooms():
    """{room: [source texts]}: each top-level module, each package (modules/, momem/, bench/) as one
    room, and the notebooks' code cells."""
    found = {}
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "*", "*.py")):
        rel = os.path.relpath(path, ROOT)
        top = rel.split(os.sep)[0].removesuffix(".py")
        if top in ("tests", "tokenizers", ".venv", "trained", "data_cache"):
            continue
        found.setdefault(top, []).append(open(path, encoding="utf-8").read())
    for path in glob.glob(os.path.join(ROOT, "*.ipynb")):
        cells = json.load(open(path, encoding="utf-8"))["cells"]
        code = ["\n".join(line for line in "".join(c["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
                for c in cells if c["cell_type"] == "code"]
        found.setdefault("notebooks", []).extend(code)
    return found


def imports(source):
    """Top-level names of every import in a source text, lazy ones (inside functions) included."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and STRING_IMPORT.match(node.value):
            names.add(node.value.split(".")[0].split(":")[0])  # "package.module:Class", imported on use
    return names


def test_every_room_has_a_layer_and_imports_only_downward_without_circles():
    house = rooms()
    assert set(house) <= set(LAYERS), f"rooms without a layer: {sorted(set(house) - set(LAYERS))}"
    arrows = {room: {name for src in sources for name in imports(src)} & set(LAYERS) - {room}
              for room, sources in house.items()}
    upward = [f"{a} (layer {LAYERS[a]}) -> {b} (layer {LAYERS[b]})" for a, bs in arrows.items() for b in bs
              if LAYERS[b] > LAYERS[a]]
    assert not upward, f"imports that point up: {upward}"

    def reaches(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in arrows.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    circles = sorted(room for room in arrows if room in reaches(room))
    assert not circles, f"import circles through {circles}"
    assert not (arrows["config"] | arrows["tools"]), "config.py and tools/ import nothing of the project"


def test_the_layer_walk_sees_lazy_and_string_imports():
    assert imports("def f():\n    import train\n    from modules import sizing\n") == {"train", "modules"}
    assert imports('DATASETS = {"x": "momem.examples:NERExamples"}\n') == {"momem"}


def test_building_both_configs_leaves_torch_out():
    code = ("import sys, config; config.ModelConfig(model_type='fha'); config.TrainConfig(); "
            "heavy = [m for m in ('torch', 'numpy', 'tokenizers', 'modules', 'data') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_choices_are_declared_once_and_offered_on_the_command_line():
    assert "mamba2" not in open(os.path.join(ROOT, "config.py")).read().split("# --- Mamba-2")[0]  # the registry declares it
    with pytest.raises(ValueError, match=r"model_type='mamba3' is invalid: must be one of \['gpt', "):
        presets.get_preset("tiny", model_type="mamba3")
    parser = tools.ArgumentParser()
    config.add_config_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "norm_type")
    assert tuple(action.choices) == typing.get_args(config.ModelConfig.__dataclass_fields__["norm_type"].type)
    with pytest.raises(ValueError, match=r"ff_window='far' is invalid: must be one of \['disjoint', 'nested'\]"):
        config.ModelConfig(model_type="ff", ff_window="far")


@pytest.mark.parametrize("model_type, field, value, owner", [
    ("mm", "mlp_hidden_mult", 2.0, "ignores"),
    ("mm", "num_kv_heads", 2, "ignores"),
    ("gpt", "ff_lambda", 0.0, "model_type='ff'"),
    ("gpt", "fractal_split", 3, "model_type='fha'"),
    ("fha", "mm_pmem_size", 8, "model_type='mm'"),
    ("encdec", "post_branch_norm", True, "ignores"),
])
def test_a_field_the_architecture_ignores_is_an_error(model_type, field, value, owner):
    preset = next((n for n, f in presets.PRESETS.items() if f.get("model_type", "gpt") == model_type), None)
    if preset is None:  # an architecture whose only presets an application registers
        with pytest.raises(ValueError, match=f"{field}={value!r} is invalid for model_type='{model_type}'"):
            modules.validate_config(config.ModelConfig(model_type=model_type, **{field: value}))
        return
    with pytest.raises(ValueError, match=f"{field}={value!r} is invalid for model_type='{model_type}'") as e:
        presets.get_preset(preset, **{field: value})
    assert owner in str(e.value)
    cfg = config.ModelConfig(**{**presets.split_overrides(presets.PRESETS[preset])[0], field: value})
    with pytest.raises(ValueError, match=field):
        modules.build_model(cfg)  # the Python API is checked too


def test_every_preset_and_shipped_run_passes_its_architecture_checks():
    import momem  # noqa: F401  (the shipped MoMeM runs train on the datasets it registers)
    for name in presets.PRESETS:
        presets.get_preset(name)
    for folder in glob.glob(os.path.join(ROOT, "trained", "*", "model_config.json")):
        runs.load_configs(os.path.dirname(folder))


def test_weights_bounds_are_below_the_real_sizes():
    """The quick bound (values held) never exceeds the exact count (fp32 bytes / 4), for every
    preset; Memory Mosaics' is close (it is not charged for an MLP it never builds)."""
    for name in presets.PRESETS:
        cfg, _ = presets.get_preset(name)
        cls = modules.MODEL_REGISTRY[cfg.model_type]
        _, nbytes = modules.sizing.unbuilt_size(cls, cfg)
        assert cls.weights_lower_bound(cfg) <= nbytes / 4, name
    mm, _ = presets.get_preset("mm_1m")
    _, nbytes = modules.sizing.unbuilt_size(modules.MODEL_REGISTRY["mm"], mm)
    assert 0.9 * nbytes / 4 < modules.MemoryMosaics.weights_lower_bound(mm) <= nbytes / 4


def test_a_seed_out_of_range_names_the_field(capsys):
    with pytest.raises(ValueError, match=r"seed=18446744073709551616 is invalid: must be an integer in \[0, 2\*\*63 - 1"):
        config.TrainConfig(seed=2**64)
    with pytest.raises(SystemExit) as e:
        train.main([*TINY_TRAIN_ARGS, "--seed", str(2**64)])
    assert_cli_error(e.value.code, capsys.readouterr().err, "seed=18446744073709551616")


def test_a_huge_learning_rate_never_writes_non_finite_weights(tmp_path):
    cfg, tcfg = tiny_configs(lr=1e6, max_steps=30, checkpoint_interval=1, eval_interval=1, out_dir=str(tmp_path),
                             name="boom")
    with pytest.raises(train.NonFiniteLoss, match="the last good checkpoint|The last good checkpoint"):
        train.train(cfg, tcfg, progress=False)
    ckpt = runs.load_checkpoint(str(tmp_path / "boom" / "checkpoint.pt"), torch.device("cpu"))
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    model = tools.load_weights(modules.build_model(cfg), str(tmp_path / "boom" / "model.safetensors"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_refuses_config_flags_it_would_ignore(tiny_run, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", tiny_run, "--max_steps", "12", "--no_progress"])
    assert_cli_error(e.value.code, capsys.readouterr().err, "--max_steps cannot change them")


def test_weights_of_another_architecture_are_refused_naming_both(tmp_path):
    fha = presets.demo_config("fha")
    model = modules.build_model(fha)
    run = tmp_path / "fha_run"
    run.mkdir()
    tools.save_weights(model, str(run / "model.safetensors"), runs.architecture(fha))
    edited = {**config.to_dict(fha), "model_type": "gpt"}  # the shapes of an fha model fit a gpt one
    (run / "model_config.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"model_type='gpt' \(the weights were trained with model_type='fha'\)"):
        inference.load_model(str(run), device="cpu")
    (run / "model_config.json").write_text(json.dumps(config.to_dict(fha)))
    inference.load_model(str(run), device="cpu")  # its own config loads
    gpt_run = tmp_path / "gpt_run"
    shutil.copytree(run, gpt_run)
    gpt = config.ModelConfig(**edited)
    tools.save_weights(modules.build_model(gpt), str(gpt_run / "model.safetensors"), runs.architecture(gpt))
    (gpt_run / "model_config.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"model_type='fha' \(the weights were trained with model_type='gpt'\)"):
        inference.load_model(str(gpt_run), device="cpu", model_type="fha")


def test_gpu_presets_have_the_stated_shapes():
    m, t = presets.get_preset("llama_stories15m")
    assert (m.dim, m.num_layers, m.num_q_heads, m.max_seq_len, m.mlp_hidden_dim) == (288, 6, 6, 256, 768)
    big, _ = presets.get_preset("llama_40m")
    params, _ = modules.sizing.unbuilt_size(modules.MODEL_REGISTRY["gpt"], big)
    assert 39e6 < params < 41e6 and t.batch_size >= 64


@pytest.mark.parametrize("preset", ["llama_1m", "fha_1m", "mm_1m", "ff_1m"])
def test_flops_per_token_match_a_measured_count(preset):
    """sizing.flops_per_token against torch's FlopCounterMode over a forward and backward pass
    (the math attention kernel, whose matmuls the counter sees; the fused CPU kernel it does not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    cfg, _ = presets.get_preset(preset, max_seq_len=128)
    model = modules.build_model(cfg)
    x = torch.randint(2, cfg.vocab_size, (2, cfg.max_seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    formula = modules.flops_per_token(tools.count_parameters(model)[0], cfg)
    assert counter.get_total_flops() / x.numel() == pytest.approx(formula, rel=0.1)


@pytest.mark.parametrize("preset", ["llama_1m", "gpt2_1m", "fha_1m", "mm_1m", "ff_1m"])
def test_a_size_rule_reaches_every_size_for_every_architecture(preset):
    for size in ("100k", "50M"):
        cfg, _ = presets.get_preset(preset, size=size)
        assert presets.non_embedding_params(cfg) == pytest.approx(presets.parse_size(size), rel=0.1), size
    small, _ = presets.get_preset(preset, size="100k")
    big, _ = presets.get_preset(preset, size="50M")
    assert big.num_layers > small.num_layers and big.dim > small.dim  # both grow, depth by the cube root


def test_controls_stay_parameter_matched_at_every_size():
    for control, idea in presets.CONTROLS.items():
        a, b = presets.get_preset(idea, size="2M")[0], presets.get_preset(control, size="2M")[0]
        assert presets.non_embedding_params(a) == presets.non_embedding_params(b)
    with pytest.raises(ValueError, match="size='lots' is invalid"):
        presets.get_preset("llama_1m", size="lots")


# the files that serve every architecture: none may name one, read its knobs or import its file
CORE_FILES = ("presets.py", "modules/sizing.py", "modules/probe.py", "train.py", "inference.py", "model_comparison.py",
              "scaling.py", "hparam_search.py", "runs.py", "metrics.py")


def architecture_mentions(source):
    """(line, what) for each place a source names an architecture: a comparison with model_type,
    an architecture's own config field read or spelled, or an import of an architecture's file."""
    names = set(modules.MODEL_REGISTRY) - {"gpt"}  # the baseline's name is the config's default, not an idea
    fields = {f for cls in modules.MODEL_REGISTRY.values() for f in cls.own_fields}
    files = {cls.__module__ for cls in modules.MODEL_REGISTRY.values()} - {"modules.model"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "model_type" for s in sides):
                found.append((node.lineno, "compares model_type"))
        elif isinstance(node, ast.Attribute) and node.attr in fields:
            found.append((node.lineno, f"reads .{node.attr}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names | fields:
            found.append((node.lineno, f"spells {node.value!r}"))
        elif isinstance(node, ast.ImportFrom) and node.module in files:
            found.append((node.lineno, f"imports {node.module}"))
        elif isinstance(node, ast.Import) and any(a.name in files for a in node.names):
            found.append((node.lineno, "imports an architecture's file"))
    return found


@pytest.mark.parametrize("path", CORE_FILES)
def test_no_core_file_names_an_architecture(path):
    found = architecture_mentions(open(os.path.join(ROOT, path), encoding="utf-8").read())
    assert not found, f"{path} names an architecture (ask the registry or a hook on the class instead): {found}"


def test_the_walk_finds_what_it_looks_for():
    assert sorted(w for _, w in architecture_mentions("if cfg.model_type == 'mm':\n    n = cfg.mm_pmem_size\n"
                                                       "from modules.future_former import FutureFormer\n")) == sorted([
        "compares model_type", "spells 'mm'", "reads .mm_pmem_size", "imports modules.future_former"])


def test_every_shipped_run_is_its_preset():
    """`python train.py --preset NAME` reproduces the shipped run NAME: its stored configs equal the
    preset's (the data folder aside; a run NAME_seedS is the preset at --seed S)."""
    import momem  # noqa: F401  (registers MoMeM's presets)
    checked = []
    for path in sorted(glob.glob(os.path.join(ROOT, "trained", "*", "train_config.json"))):
        run = os.path.dirname(path)
        name = os.path.basename(run)
        stored = runs.load_configs(run)
        preset = name.split("_seed")[0]
        if preset not in presets.PRESETS:
            continue
        expected = presets.get_preset(preset, name=name, seed=stored[1].seed)
        for got, want in zip(stored, expected):
            differ = {k: (v, getattr(want, k)) for k, v in config.to_dict(got).items()
                      if v != getattr(want, k) and k != "data_dir"}
            assert not differ, f"trained/{name} differs from preset {preset!r}: {differ}"
        checked.append(name)
    assert {"llama_1m", "gpt2_1m", "mm_1m", "ff_1m", "fha_1m", "momem_ner"} <= set(checked), checked


def test_the_quick_tier_keeps_the_checks_that_matter_and_drops_the_slow_ones():
    """`-m "not slow"` still runs every architecture's causality and cache checks and the layout
    tests, and leaves out the notebooks, the README's commands and the crash tests."""
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "tests"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120).stdout.splitlines()
    quick = {line for line in listed if "::" in line}
    assert not any(line.startswith(("tests/test_notebooks.py", "tests/test_readme.py::test_readme_commands_run"))
                   for line in quick)
    assert "tests/test_reliability.py::test_sigkill_at_random_moments_loses_nothing" not in quick
    for needed in ("tests/test_mamba2.py::test_causality_and_cache", "tests/test_fractal_head_attention.py::"
                   "test_causality_cache_and_leak", "tests/test_house.py::test_no_core_file_names_an_architecture",
                   "tests/test_generation.py::test_every_architecture_generates_batched_with_cache_equal_to_"
                   "recomputation"):
        assert any(line.startswith(needed) for line in quick), needed
    assert len(quick) > 300  # most tests are quick
