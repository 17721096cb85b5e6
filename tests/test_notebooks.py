"""Execute every notebook top to bottom in a tiny configuration (a cell injected after the one
tagged "parameters"); any error fails the test."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import FIXTURE_DATA, ROOT

SHIPPED = os.path.join(ROOT, "trained", "llama_1m", "model.safetensors")


def run_notebook(name, injected):
    book = nbformat.read(os.path.join(ROOT, f"{name}.ipynb"), as_version=4)
    assert all(c.get("outputs", []) == [] for c in book.cells if c.cell_type == "code"), "commit notebooks without outputs"
    index = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    book.cells.insert(index + 1, nbformat.v4.new_code_cell(injected))
    client = NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    client.execute()
    return book


def outputs_text(book):
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     + str(o.get("data", {}).get("text/markdown", "")) for c in book.cells
                     if c.cell_type == "code" for o in c.outputs)


def test_train_notebook(tmp_path):
    book = run_notebook("train", f'PRESET = "tiny"\nOVERRIDES = dict(name="nb", out_dir={str(tmp_path)!r}, '
                                 f'data_dir={FIXTURE_DATA!r}, max_steps=4, eval_interval=2, checkpoint_interval=2, '
                                 'batch_size=4, eval_tokens=1024, compile="off")')
    assert os.path.isfile(tmp_path / "nb" / "model.safetensors")
    assert "Once upon a time" in outputs_text(book)


@pytest.mark.skipif(not os.path.isfile(SHIPPED), reason="the shipped model trained/llama_1m is not present")
def test_inference_notebook():
    book = run_notebook("inference", "MAX_NEW_TOKENS = 8")
    assert "temperature" in outputs_text(book)


@pytest.mark.skipif(not os.path.isfile(SHIPPED), reason="the shipped model trained/llama_1m is not present")
def test_model_comparison_notebook(tmp_path):
    book = run_notebook("model_comparison", f'RUNS = ["llama_1m"]\nOUT_DIR = {str(tmp_path)!r}\n'
                                     f'DATA_DIR = {FIXTURE_DATA!r}\nEVAL_TOKENS = 2048\nSTUDY = "none_here"\n'
                                     'PROBE_STUDY = "none_here"')
    assert os.path.isfile(tmp_path / "curves.png") and os.path.isfile(tmp_path / "summary.md")
    assert "compute multiplier" in outputs_text(book)  # the scaling section: without the study's runs, the shipped report
    text = outputs_text(book)  # the probes section: the shipped report, or how to make one
    assert "Capability probe: mqar" in text or "No probe study yet" in text


def test_testing_modules_notebook():
    book = run_notebook("testing_modules", "BATCH, SEQ = 1, 3")
    text = outputs_text(book)
    from modules import registered_types
    for model_type in registered_types():
        assert f"######## {model_type}" in text
    assert "> Attention.attend" in text and "(1, 3, 16)" in text


MOMEM = [os.path.join(ROOT, "trained", name, "model.safetensors") for name in ("momem_ner", "momem_summary", "momem_response")]


@pytest.mark.skipif(not all(map(os.path.isfile, MOMEM)), reason="the MoMeM modules are not trained (python -m momem train all)")
def test_momem_notebook():
    book = run_notebook("momem", "LIMIT = 12")
    text = outputs_text(book)
    assert "people in memory" in text and "I don't know anyone called" in text and "end-to-end (chained)" in text


def test_hyperparameter_search_notebook(tmp_path, monkeypatch):
    book = run_notebook("hyperparameter_search",
                        f'import hparam_search\nhparam_search.SWEEPS = {str(tmp_path)!r}\nSTUDY = "nb"\nPRESET = "tiny"\n'
                        f'SPACE = ["lr=log:1e-3:1e-2"]\nTRIALS = 2\nTOKENS = 4 * 64 * 4\n'
                        f'FIXED = dict(data_dir={FIXTURE_DATA!r}, device="cpu", compile="off", autocast="off", '
                        'batch_size=4, eval_interval=2, checkpoint_interval=2, eval_tokens=1024)')
    assert "MiB to train" in outputs_text(book) and os.path.isfile(tmp_path / "nb" / "summary.md")
