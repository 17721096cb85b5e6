"""Normalisation layer: RMSNorm, LayerNorm or CosineNorm, with optional learned scale and shift."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io


class Norm(LoggingModule):
    """(..., dim) -> (..., dim). Scale and shift are registered parameters, so they train on any device."""

    def __init__(self, dim, norm_type="rmsnorm", affine=True, bias=False, eps=1e-6):
        super().__init__()
        self.norm_type, self.eps, self.dim = norm_type, eps, dim
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    @log_io
    def forward(self, x):
        if self.norm_type == "layernorm":
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        if self.norm_type == "rmsnorm":
            x = F.rms_norm(x, (self.dim,), self.weight, self.eps)
        else:  # cosinenorm: project onto the unit sphere
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)
            if self.weight is not None:
                x = x * self.weight
        return x + self.bias if self.bias is not None else x

    def extra_repr(self):
        return f"{self.dim}, {self.norm_type}, affine={self.weight is not None}, bias={self.bias is not None}"
