"""Shape tracing for teaching and debugging.

Every module of the model package subclasses `LoggingModule`, and its interesting methods
carry `@log_io`. Tracing is off by default; then the decorator costs one attribute lookup.

    with trace(model):                      # the whole model: every LoggingModule child
        model(tokens)
    with trace(model, mute={"project_qkv"}):  # hide some methods by name
        ...

Each decorated call prints, indented by call depth, its tensor inputs and outputs
(name, shape, dtype, min/max) and the values of other small arguments.
"""
import contextlib
import functools
import inspect

import torch
from torch import nn

_depth = 0  # current nesting of traced calls (for indentation)


class LoggingModule(nn.Module):
    """nn.Module with a per-instance tracing switch that `trace()` flips for a whole tree."""

    _trace_on = False
    _trace_muted = frozenset()


def _describe(name, value, indent):
    pad = "  " * indent
    if isinstance(value, torch.Tensor):
        if value.numel() and (value.is_floating_point() or value.dtype in (torch.int64, torch.int32, torch.bool)):
            v = value.detach().float()
            rng = f" min/max {v.min().item():.4g}/{v.max().item():.4g}"
        else:
            rng = ""
        return [f"{pad}{name}: {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}{rng}"]
    if isinstance(value, (list, tuple)) and value and any(isinstance(v, torch.Tensor) for v in value):
        return [line for i, v in enumerate(value) for line in _describe(f"{name}[{i}]", v, indent)]
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _describe(f"{name}[{k!r}]", v, indent)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return [f"{pad}{name} = {value!r}"]
    return [f"{pad}{name}: {type(value).__name__}"]


def log_io(method):
    """Decorate a LoggingModule method so that, while tracing, it prints its inputs and outputs."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not self._trace_on or method.__name__ in self._trace_muted:
            return method(self, *args, **kwargs)
        global _depth
        bound = signature.bind(self, *args, **kwargs)
        pad = "  " * _depth
        print(f"{pad}> {type(self).__name__}.{method.__name__}")
        for name, value in list(bound.arguments.items())[1:]:
            print("\n".join(_describe(name, value, _depth + 1)))
        _depth += 1
        try:
            out = method(self, *args, **kwargs)
        finally:
            _depth -= 1
        print("\n".join(_describe("output", out, _depth + 1)))
        print(f"{pad}< {type(self).__name__}.{method.__name__}")
        return out

    return wrapper


def set_tracing(model, on, mute=()):
    """Turn tracing on or off for `model` and every LoggingModule inside it."""
    for m in model.modules():
        if isinstance(m, LoggingModule):
            if on:
                m._trace_on, m._trace_muted = True, frozenset(mute)
            else:  # drop the instance attributes so the class defaults (off) apply again
                m.__dict__.pop("_trace_on", None)
                m.__dict__.pop("_trace_muted", None)


@contextlib.contextmanager
def trace(model, mute=()):
    """Context manager: trace every decorated call inside `model` (muting method names in `mute`)."""
    set_tracing(model, True, mute)
    try:
        yield model
    finally:
        set_tracing(model, False)
