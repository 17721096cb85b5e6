"""The model package. The registry maps ModelConfig.model_type to a model class.

Adding an architecture: one file in this folder, one line below, one preset in config.py.
"""
from modules.logging import LoggingModule, log_io, set_tracing, trace  # noqa: F401
from modules.model import GPT

MODEL_REGISTRY = {
    "gpt": GPT,  # Llama / GPT-2 baseline (modules/model.py)
}


def registered_types():
    return tuple(MODEL_REGISTRY)


def build_model(cfg):
    """Instantiate the model class registered for cfg.model_type."""
    return MODEL_REGISTRY[cfg.model_type](cfg)
