"""Export to Hugging Face transformers: logits, greedy generation and the tokenizer match ours."""
import os

import pytest
import torch

import export
import inference
from conftest import FIXTURE_DATA, ROOT, SHARED_DATA, assert_cli_error

transformers = pytest.importorskip("transformers")
SHIPPED = [name for name in ("llama_1m", "gpt2_1m") if os.path.isfile(os.path.join(ROOT, "trained", name, "model.safetensors"))]


def check_export(run, out):
    export.export(run, str(out))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    model, tok, cfg = inference.load_model(run, device="cpu")
    rows = [[0] + tok.encode(text).ids for text in ("Once upon a time, a little dog named Max liked to run.",
                                                     "Lily had a big red ball. She played with it every day.")]
    ids = torch.tensor([row[:min(map(len, rows))] for row in rows])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], atol=1e-4, rtol=0)
    ours = inference.generate(model, tok, ["Once upon a time"], max_new_tokens=24, temperature=0, return_ids=True,
                              stop_at_eot=False)[0].tolist()
    start = torch.tensor([[0] + tok.encode("Once upon a time").ids])
    theirs = hf.generate(start, do_sample=False, max_new_tokens=24, min_new_tokens=24)[0, start.shape[1]:].tolist()
    assert theirs == ours
    data_dir = SHARED_DATA if os.path.isfile(os.path.join(SHARED_DATA, "valid.txt")) else FIXTURE_DATA
    text = open(os.path.join(data_dir, "valid.txt"), encoding="utf-8").read()[:20000]
    assert hf_tok(text).input_ids == tok.encode(text).ids
    assert hf_tok.decode(hf_tok(text).input_ids) == text
    assert "from_pretrained" in (out / "README.md").read_text()
    return type(hf).__name__


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_baselines_export_with_equal_logits_and_greedy_ids(name, tmp_path):
    assert check_export(name, tmp_path / name) == {"llama_1m": "LlamaForCausalLM", "gpt2_1m": "GPT2LMHeadModel"}[name]


def test_a_tiny_run_exports(tiny_run, tmp_path):
    assert check_export(tiny_run, tmp_path / "tiny") == "LlamaForCausalLM"


def test_other_architectures_are_refused_in_one_line(capsys, tmp_path):
    if not os.path.isdir(os.path.join(ROOT, "trained", "mm_1m")):
        pytest.skip("trained/mm_1m is not present")
    with pytest.raises(SystemExit) as e:
        export.main(["mm_1m", str(tmp_path / "mm")])
    assert_cli_error(e.value.code, capsys.readouterr().err, "model_type='mm' cannot be exported.*Llama-style or GPT-2-style")
