"""bench/gpu_check.py's path without CUDA (the one CI can run): one line that says so, a CPU smoke
run, the report, exit 0."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the check runs the GPU path (minutes)")
def test_without_cuda_it_says_so_smoke_trains_and_reports(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "no CUDA device here: the GPU checks are skipped; a CPU smoke run instead"
    report = open(tmp_path / "report.md").read()
    assert "CPU smoke: tiny for 20 steps" in report and "exit 0" in report
    assert os.path.isfile(tmp_path / "runs" / "smoke" / "model.safetensors")
