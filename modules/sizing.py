"""Every size formula in one place: parameters, memory (weights, a training step, generation)
and training FLOPs per token. Nothing here allocates: sizes are decided before a model exists,
so a config too large for the machine is refused in microseconds, not after minutes of swapping.

The formulas that depend on an architecture are hooks on its class: `weights_lower_bound`
(the baseline's is below) and `mixer_flops_per_token` (attention's is below).
"""
import math

import torch

import tools


# --- parameters ---------------------------------------------------------------------------------
def config_key(cfg):
    """A hashable key of a config's values (derived fields included): equal configs, equal keys."""
    return type(cfg).__name__, tuple(sorted(vars(cfg).items()))


_SIZES = {}  # (class, config key) -> (parameters, bytes, embedding parameters): one meta build each


def _meta_size(model_cls, cfg):
    """(parameters, bytes of parameters and buffers, embedding parameters) of model_cls(cfg),
    built on the meta device once per class and config values (sizes past int64: infinite)."""
    key = model_cls, config_key(cfg)
    if key not in _SIZES:
        try:
            with torch.device("meta"):
                model = model_cls(cfg)
        except RuntimeError as e:
            if "overflow" not in str(e):
                raise
            _SIZES[key] = math.inf, math.inf, 0
        else:
            total, embedding = tools.count_parameters(model)
            _SIZES[key] = total, sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())), \
                embedding
    return _SIZES[key]


def unbuilt_size(model_cls, cfg):
    """(parameters, bytes of parameters and buffers) of model_cls(cfg), without allocating (meta device)."""
    return _meta_size(model_cls, cfg)[:2]


def unbuilt_non_embedding(model_cls, cfg):
    """Parameters outside the embeddings (the class's `embedding_names`) of model_cls(cfg), without allocating."""
    total, _, embedding = _meta_size(model_cls, cfg)
    return total - embedding


def baseline_weights_lower_bound(c):
    """Values (parameters and buffers) a GPT-family model holds at least: the embedding, every
    layer's attention and MLP matrices, and a position table."""
    mlp_matrices = 3 if c.mlp_gated else 2
    per_layer = (2 * c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim * c.dim + mlp_matrices * c.dim * c.mlp_hidden_dim
    return c.vocab_size * c.dim + c.num_layers * per_layer + c.max_seq_len * c.head_dim


# --- memory ----------------------------------------------------------------------------------
def check_weights_fit(model_cls, cfg, device):
    """ValueError unless the weights fit in the memory free on device:
    first the architecture's lower bound at 2 bytes per value (they hold 4, so it never refuses
    what the exact count allows, and num_layers=10**6 does not even build on the meta device),
    then the exact count from a meta build."""
    what = (f"the weights of this model (dim={cfg.dim}, num_layers={cfg.num_layers}, max_seq_len={cfg.max_seq_len}, "
            f"vocab_size={cfg.vocab_size})")
    advice = "lower dim, num_layers or max_seq_len"
    tools.check_fits(2 * model_cls.weights_lower_bound(cfg), device, what, advice)
    tools.check_fits(unbuilt_size(model_cls, cfg)[1], device, what, advice)


def training_memory(params, model_cfg, train_cfg):
    """Bytes a training step needs: parameters x 16 (fp32 weights, gradients, AdamW's two
    moments) + activations kept for backward (per token and layer about 20 x dim + 4 x the MLP's
    hidden width floats, plus the attention outputs) + the logits (3 fp32 copies of batch x
    context x vocab: logits, softmax, gradient) + about 80 MiB of work space the first steps
    allocate at any size. Measured on CPU (growth of peak RSS over two steps,
    tests/test_hparam_search.py) it is within a factor 1.5 either way."""
    c = model_cfg
    tokens = train_cfg.batch_size * c.max_seq_len
    per_token_layer = 20 * c.dim + 4 * c.mlp_hidden_dim + 4 * c.num_q_heads * c.head_dim
    activations = 4 * tokens * c.num_layers * per_token_layer
    logits = 3 * 4 * tokens * c.vocab_size
    return 16 * params + activations + logits + 80 * 2**20


def generation_memory(cfg, rows):
    """Bytes generating `rows` sequences at once needs: per row the prompt's logits and every
    layer's decoding state over the whole context."""
    return rows * 4 * cfg.max_seq_len * (cfg.vocab_size + 4 * cfg.num_layers * cfg.dim)


# --- compute -----------------------------------------------------------------------------------
def attention_flops_per_token(cfg):
    """Training FLOPs per token of attention's scores and mixing, beyond the parameters' 6N
    (nanoGPT's estimate_mfu, PaLM appendix B): 12 x layers x query width x context (2 x 2 x
    width x context forward, twice that backward). The query width is num_q_heads x head_dim:
    FHA's sub-heads partition it (the same FLOPs as ordinary attention), Memory Mosaics' heads
    split dim (its persistent-memory slots are parameters, inside 6N), and FutureFormer's heads
    and read-ins are parameters too. An architecture whose mixer is not attention declares its
    own `mixer_flops_per_token`."""
    return 12 * cfg.num_layers * cfg.num_q_heads * cfg.head_dim * cfg.max_seq_len


def flops_per_token(params, cfg, model_cls):
    """Training FLOPs per token: 6 per parameter (forward and backward: every weight does one
    multiply-add per token, the tied embedding as the output head) plus the mixer's own."""
    return 6 * params + model_cls.mixer_flops_per_token(cfg)
