"""The model package. The registry declares the architectures: ModelConfig.model_type names one.

Adding an architecture: one file in this folder (the idea, the fast code, its literal
reference; its presets and control, checks, size hooks and own fields declared on the class),
one line below, its fields in one section of config.py, and its test.
"""
import dataclasses

import torch

from modules import sizing
from modules.logging import LoggingModule, log_io, set_tracing, trace  # noqa: F401
from modules.encoder_decoder import EncoderDecoder
from modules.fractal_head_attention import FractalHeadGPT
from modules.future_former import FutureFormer
from modules.mamba2 import Mamba2
from modules.memory_mosaics import MemoryMosaics
from modules.model import GPT

MODEL_REGISTRY = {
    "gpt": GPT,  # Llama / GPT-2 baseline (modules/model.py)
    "fha": FractalHeadGPT,  # Fractal-Head Attention (modules/fractal_head_attention.py)
    "mm": MemoryMosaics,  # Memory Mosaics (modules/memory_mosaics.py)
    "encdec": EncoderDecoder,  # encoder-decoder with a copy head, MoMeM's summarizer and generator (modules/encoder_decoder.py)
    "ff": FutureFormer,  # FutureFormer: multi-scale future prediction heads (modules/future_former.py)
    "mamba2": Mamba2,  # Mamba-2: a selective state-space mixer, no attention (modules/mamba2.py)
}


def registered_types():
    return tuple(MODEL_REGISTRY)


_VALIDATED = set()  # configs (as their field values) already checked: each is checked once per process


def validate_config(cfg):
    """Architecture checks of a ModelConfig: no field is set (away from its default) that this
    architecture would ignore (another architecture's knob, or one its class lists in
    `ignored_fields`), then the class's own `validate_config`. A config already checked (the
    same values) is not checked again: presets, the trainer and build_model all call this."""
    key = sizing.config_key(cfg)
    if key in _VALIDATED:
        return
    if cfg.model_type not in MODEL_REGISTRY:
        raise ValueError(f"model_type={cfg.model_type!r} is invalid: must be one of {list(MODEL_REGISTRY)} "
                         "(the architectures registered in modules/__init__.py)")
    cls = MODEL_REGISTRY[cfg.model_type]
    owner = {name: t for t, c in MODEL_REGISTRY.items() if c is not cls for name in c.own_fields}
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.init}
    for name in sorted(set(owner) - set(cls.own_fields) | set(cls.ignored_fields)):
        value = getattr(cfg, name)
        if value != defaults[name]:
            used_by = f"a knob of model_type={owner[name]!r}" if name in owner else "a field this architecture ignores"
            raise ValueError(f"{name}={value!r} is invalid for model_type={cfg.model_type!r}: it is {used_by}, so it "
                             f"would change nothing; leave it at its default {defaults[name]!r}")
    cls.validate_config(cfg)
    _VALIDATED.add(key)


def estimate_training_memory(model_cfg, train_cfg):
    """Bytes a training step of these configs needs (modules.sizing.training_memory)."""
    validate_config(model_cfg)  # before a meta build: an impossible FHA layout must not even start one
    params, _ = sizing.unbuilt_size(MODEL_REGISTRY[model_cfg.model_type], model_cfg)
    return sizing.training_memory(params, model_cfg, train_cfg)


def flops_per_token(params, cfg):
    """Training FLOPs per token of a model of `params` parameters (modules.sizing.flops_per_token)."""
    return sizing.flops_per_token(params, cfg, MODEL_REGISTRY[cfg.model_type])


def check_weights_fit(cfg, device=None):
    """ValueError unless the weights of cfg fit in the memory free on device (default: the CPU's)."""
    validate_config(cfg)
    sizing.check_weights_fit(MODEL_REGISTRY[cfg.model_type], cfg, device or torch.device("cpu"))


def build_model(cfg):
    """Instantiate the model class registered for cfg.model_type, after the architecture's
    checks; a config whose weights alone would not fit in memory is refused (ValueError) before
    anything is allocated."""
    check_weights_fit(cfg)
    return MODEL_REGISTRY[cfg.model_type](cfg)
