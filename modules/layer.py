"""The residual layer: x + attention(norm(x)), then x + mlp(norm(x)) (pre-norm)."""
from torch import nn

from modules.logging import LoggingModule, log_io
from modules.mlp import MLP
from modules.norm import Norm


def make_norm(cfg, dim=None):
    """A Norm configured from a ModelConfig (dim defaults to cfg.dim)."""
    return Norm(dim or cfg.dim, cfg.norm_type, cfg.norm_affine, cfg.norm_bias, cfg.norm_eps)


class ResidualLayer(LoggingModule):
    """(B, T, dim) -> (B, T, dim). `mixer` mixes positions (attention or an architecture's
    replacement, called as mixer(x, positions, cache, **mixer_inputs): an encoder's key mask,
    say); `mlp` mixes channels (called as mlp(x, cache), for replacements that keep decoding
    state). With
    cfg.post_branch_norm each branch output is normalised again before the add (Grok style)."""

    def __init__(self, cfg, mixer, mlp=None):
        super().__init__()
        self.mixer_norm, self.mixer = make_norm(cfg), mixer
        self.mlp_norm = make_norm(cfg)
        self.mlp = mlp if mlp is not None else MLP(cfg.dim, cfg.mlp_hidden_dim, cfg.mlp_activation, cfg.mlp_gated,
                                                   cfg.linear_bias, cfg.dropout)
        self.mixer_post_norm = make_norm(cfg) if cfg.post_branch_norm else nn.Identity()
        self.mlp_post_norm = make_norm(cfg) if cfg.post_branch_norm else nn.Identity()
        self.branch_dropout = nn.Dropout(cfg.dropout)

    @log_io
    def forward(self, x, positions, cache=None, **mixer_inputs):
        x = x + self.branch_dropout(self.mixer_post_norm(self.mixer(self.mixer_norm(x), positions, cache, **mixer_inputs)))
        return x + self.mlp_post_norm(self.mlp(self.mlp_norm(x), cache))
