"""Feed-forward block: gated (SwiGLU / GeGLU / ReGLU) or plain two-layer MLP."""
import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "relu2": lambda x: F.relu(x).square()}


class MLP(LoggingModule):
    """(B, T, dim) -> (B, T, dim). Gated: down(act(gate(x)) * up(x)); plain: down(act(up(x)))."""

    def __init__(self, dim, hidden_dim, activation="silu", gated=True, bias=False, dropout=0.0):
        super().__init__()
        self.act, self.gated = ACTIVATIONS[activation], gated
        self.up = nn.Linear(dim, hidden_dim * (2 if gated else 1), bias=bias)  # gate and up fused in one matmul
        self.down = nn.Linear(hidden_dim, dim, bias=bias)
        self.down.is_residual_out = True
        self.dropout = nn.Dropout(dropout)

    @log_io
    def forward(self, x, cache=None):
        """cache is unused: the MLP keeps no state across positions."""
        h = self.up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.dropout(self.down(h))
