import math
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FIXTURE_DATA = os.path.join(ROOT, "tests", "fixtures", "stories")
SHARED_DATA = os.environ.get("MMS_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data", "tinystories")

needs_shared_data = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_DATA, "train.txt")),
    reason=f"TinyStories text not found at {SHARED_DATA} (set MMS_DATA_DIR to a folder with train.txt/valid.txt)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_configs(**overrides):
    """(ModelConfig, TrainConfig) of the tiny preset, CPU, no compile, fixture data."""
    from config import get_preset
    settings = dict(device="cpu", compile="off", autocast="off", data_dir=FIXTURE_DATA, batch_size=8,
                    eval_tokens=2048, eval_interval=10, checkpoint_interval=10, max_steps=20)
    settings.update(overrides)
    return get_preset("tiny", **settings)


def ln(v):
    return math.log(v)
