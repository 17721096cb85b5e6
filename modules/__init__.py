"""The model package. The registry maps ModelConfig.model_type to a model class.

Adding an architecture: one file in this folder, one line below, one preset in config.py.
"""
from modules.logging import LoggingModule, log_io, set_tracing, trace  # noqa: F401
from modules.encoder_decoder import EncoderDecoder
from modules.fractal_head_attention import FractalHeadGPT
from modules.future_former import FutureFormer
from modules.memory_mosaics import MemoryMosaics
from modules.model import GPT

MODEL_REGISTRY = {
    "gpt": GPT,  # Llama / GPT-2 baseline (modules/model.py)
    "fha": FractalHeadGPT,  # Fractal-Head Attention (modules/fractal_head_attention.py)
    "mm": MemoryMosaics,  # Memory Mosaics (modules/memory_mosaics.py)
    "encdec": EncoderDecoder,  # encoder-decoder with a copy head, MoMeM's summarizer and generator (modules/encoder_decoder.py)
    "ff": FutureFormer,  # FutureFormer: multi-scale future prediction heads (modules/future_former.py)
}


def registered_types():
    return tuple(MODEL_REGISTRY)


def validate_config(cfg):
    """Architecture-specific checks of a ModelConfig (a model class may define validate_config)."""
    check = getattr(MODEL_REGISTRY[cfg.model_type], "validate_config", None)
    if check is not None:
        check(cfg)


def build_model(cfg):
    """Instantiate the model class registered for cfg.model_type. A config whose weights alone
    would not fit in memory is refused (ValueError) before anything is allocated."""
    import tools
    tools.check_weights_fit(cfg)
    return MODEL_REGISTRY[cfg.model_type](cfg)
