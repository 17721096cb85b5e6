"""Export a trained baseline to Hugging Face `transformers`: `export(run, out_dir)`, or

    python export.py trained/llama_1m exported/llama_1m
    python export.py gpt2_1m exported/gpt2_1m

writes config.json, model.safetensors, generation_config.json, tokenizer.json +
tokenizer_config.json and a model card (README.md), loadable offline by
`AutoModelForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)`.
Llama-style `gpt` runs (RMSNorm, RoPE, gated MLP) become `LlamaForCausalLM`, GPT-2-style runs
(LayerNorm with bias, learned positions, plain MLP, biases) `GPT2LMHeadModel`; the other
architectures have no `transformers` class and are refused.

Two details keep the logits equal: the sandbox's RoPE is already rotate-half (channel j pairs
with j + head_dim/2), as Hugging Face's Llama; and `scale_embedding` (token embeddings times
sqrt(dim), the output head reading the unscaled matrix) is exported as a scaled input embedding
and an untied output head, since Llama has no embedding scale.
"""
import json
import math
import os
import shutil
import sys

import config
import inference
import runs
import tools

LLAMA = dict(norm_type="rmsnorm", pos_encoding="rope", mlp_gated=True, post_branch_norm=False, linear_bias=False,
             norm_bias=False, norm_affine=True)
GPT2 = dict(norm_type="layernorm", pos_encoding="learned", mlp_gated=False, post_branch_norm=False, linear_bias=True,
            norm_bias=True, norm_affine=True, scale_embedding=False)
HF_ACT = {"silu": "silu", "gelu": "gelu", "relu": "relu"}  # F.gelu is the exact GELU: transformers' "gelu"


def flavour(cfg):
    """'llama' or 'gpt2': which transformers class fits the run, or a ValueError saying why none."""
    if cfg.model_type != "gpt":
        raise ValueError(f"model_type={cfg.model_type!r} cannot be exported: transformers has no class for it; "
                         "export takes Llama-style or GPT-2-style 'gpt' runs (llama_1m, gpt2_1m, tiny)")
    for name, shape in (("llama", LLAMA), ("gpt2", GPT2)):
        if all(getattr(cfg, k) == v for k, v in shape.items()):
            if name == "gpt2" and (cfg.num_kv_heads != cfg.num_q_heads or cfg.head_dim * cfg.num_q_heads != cfg.dim):
                break
            return name
    raise ValueError("this 'gpt' run is neither Llama-style (rmsnorm, rope, gated MLP, no biases) nor GPT-2-style "
                     "(layernorm with bias, learned positions, plain MLP with biases, multi-head, no embedding scale): "
                     f"norm_type={cfg.norm_type!r}, pos_encoding={cfg.pos_encoding!r}, mlp_gated={cfg.mlp_gated}, "
                     f"linear_bias={cfg.linear_bias}, post_branch_norm={cfg.post_branch_norm}")


def llama_weights(model, cfg):
    """Our state -> LlamaForCausalLM's names (q, k, v split from the fused qkv; gate, up split)."""
    sd, out = model.state_dict(), {}
    H, K, D = cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
    embed = sd["embed.weight"]
    out["model.embed_tokens.weight"] = embed * math.sqrt(cfg.dim) if cfg.scale_embedding else embed
    out["lm_head.weight"] = sd.get("head.weight", embed)
    out["model.norm.weight"] = sd["final_norm.weight"]
    for i in range(cfg.num_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        wq, wk, wv = sd[p + "mixer.qkv.weight"].split([H * D, K * D, K * D])
        out[q + "self_attn.q_proj.weight"], out[q + "self_attn.k_proj.weight"], out[q + "self_attn.v_proj.weight"] = wq, wk, wv
        out[q + "self_attn.o_proj.weight"] = sd[p + "mixer.out.weight"]
        gate, up = sd[p + "mlp.up.weight"].chunk(2)
        out[q + "mlp.gate_proj.weight"], out[q + "mlp.up_proj.weight"] = gate, up
        out[q + "mlp.down_proj.weight"] = sd[p + "mlp.down.weight"]
        out[q + "input_layernorm.weight"] = sd[p + "mixer_norm.weight"]
        out[q + "post_attention_layernorm.weight"] = sd[p + "mlp_norm.weight"]
    return out


def gpt2_weights(model, cfg):
    """Our state -> GPT2LMHeadModel's names (its Conv1D layers hold transposed matrices)."""
    sd, out = model.state_dict(), {}
    out["transformer.wte.weight"], out["transformer.wpe.weight"] = sd["embed.weight"], sd["pos_embed.weight"]
    out["lm_head.weight"] = sd.get("head.weight", sd["embed.weight"])
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd["final_norm.weight"], sd["final_norm.bias"]
    for i in range(cfg.num_layers):
        p, q = f"layers.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("mixer_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[q + theirs + ".weight"], out[q + theirs + ".bias"] = sd[p + ours + ".weight"], sd[p + ours + ".bias"]
        for ours, theirs in (("mixer.qkv", "attn.c_attn"), ("mixer.out", "attn.c_proj"), ("mlp.up", "mlp.c_fc"),
                             ("mlp.down", "mlp.c_proj")):
            out[q + theirs + ".weight"], out[q + theirs + ".bias"] = sd[p + ours + ".weight"].t(), sd[p + ours + ".bias"]
    return out


def hf_config(cfg, kind):
    """The transformers config of the run (a dict for config.json)."""
    common = dict(vocab_size=cfg.vocab_size, bos_token_id=config.EOT_ID, eos_token_id=config.EOT_ID,
                  pad_token_id=config.PAD_ID, torch_dtype="float32")
    if kind == "llama":
        return dict(common, architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=cfg.dim,
                    intermediate_size=cfg.mlp_hidden_dim, num_hidden_layers=cfg.num_layers,
                    num_attention_heads=cfg.num_q_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                    hidden_act=HF_ACT[cfg.mlp_activation], max_position_embeddings=cfg.max_seq_len,
                    rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                    rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                    attention_bias=False, mlp_bias=False, tie_word_embeddings=False)
    return dict(common, architectures=["GPT2LMHeadModel"], model_type="gpt2", n_embd=cfg.dim, n_layer=cfg.num_layers,
                n_head=cfg.num_q_heads, n_inner=cfg.mlp_hidden_dim, n_positions=cfg.max_seq_len,
                activation_function=HF_ACT[cfg.mlp_activation], layer_norm_epsilon=cfg.norm_eps,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=cfg.tie_embeddings)


def export(run, out_dir):
    """Write the Hugging Face form of the run folder `run` into out_dir; returns out_dir."""
    import safetensors.torch
    run = runs.find_run(run)
    model, _, cfg = inference.load_model(run, device="cpu")
    kind = flavour(cfg)
    weights = (llama_weights if kind == "llama" else gpt2_weights)(model, cfg)
    if kind == "gpt2" and cfg.tie_embeddings:
        weights.pop("lm_head.weight")  # tied: transformers rebuilds it from wte
    os.makedirs(out_dir, exist_ok=True)
    weights = {k: v.contiguous().clone() for k, v in weights.items()}
    tools.atomic_save(lambda p: safetensors.torch.save_file(weights, p, metadata={"format": "pt"}),
                      os.path.join(out_dir, "model.safetensors"))
    write_json(hf_config(cfg, kind), os.path.join(out_dir, "config.json"))
    write_json(dict(bos_token_id=config.EOT_ID, eos_token_id=config.EOT_ID, pad_token_id=config.PAD_ID,
                    max_length=cfg.max_seq_len, do_sample=True, temperature=0.8, min_p=0.05),
               os.path.join(out_dir, "generation_config.json"))
    shutil.copy(os.path.join(config.TOKENIZER_DIR, f"{cfg.tokenizer}.json"), os.path.join(out_dir, "tokenizer.json"))
    write_json(dict(tokenizer_class="PreTrainedTokenizerFast", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                    pad_token="<|pad|>", model_max_length=cfg.max_seq_len, clean_up_tokenization_spaces=False),
               os.path.join(out_dir, "tokenizer_config.json"))
    write_card(run, out_dir, cfg, kind)
    return out_dir


def write_json(obj, path):
    tools.atomic_save(lambda p: open(p, "w").write(json.dumps(obj, indent=2) + "\n"), path)


def write_card(run, out_dir, cfg, kind):
    """README.md of the export: what the model is and how to use it, from the run's own files."""
    r = runs.read_run(run)
    cls = "LlamaForCausalLM" if kind == "llama" else "GPT2LMHeadModel"
    text = f"""# {os.path.basename(run)} ({cls})

A {r.params:,}-parameter TinyStories model trained with micro-model-sandbox and exported with
`python export.py {os.path.relpath(run, config.ROOT)} OUT_DIR`: tokenizer `{cfg.tokenizer}`, context
{cfg.max_seq_len}, {cfg.num_layers} layers of width {cfg.dim}. Trained on {int(r.last['tokens']):,} tokens;
final validation loss {r.last['val_loss']:.4f} nats/token ({r.last['val_bpc']:.4f} bits/char) on the
sandbox's fixed validation windows.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("OUT_DIR")
model = AutoModelForCausalLM.from_pretrained("OUT_DIR")
ids = tok("<|endoftext|>Once upon a time", return_tensors="pt").input_ids  # stories start after <|endoftext|>
print(tok.decode(model.generate(ids, max_new_tokens=100)[0], skip_special_tokens=True))
```

Every training story starts after an `<|endoftext|>` token (id {config.EOT_ID}), which also ends it;
`<|pad|>` is id {config.PAD_ID}. With lm-eval-harness (not a dependency of the sandbox):
`lm_eval --model hf --model_args pretrained=OUT_DIR --tasks ...`.
"""
    tools.atomic_save(lambda p: open(p, "w").write(text), os.path.join(out_dir, "README.md"))


def main(argv=None):
    parser = tools.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="run folder: a path, or a name under trained/")
    parser.add_argument("out_dir", help="folder for the transformers files")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {export(args.run, args.out_dir)}")
    except tools.USER_ERRORS as e:
        tools.fail(e)


if __name__ == "__main__":
    main(sys.argv[1:])
