#!/usr/bin/python3
"""Exports a trained model to Hugging Face layout (config.json, bf16 model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json).

Standalone: /usr/bin/python3 tools/export_hf.py --ckpt tools/.ckpt/last.pt --out models/kvspan-brown
(the tokenizer is taken from --tokenizer, default: the --out directory's tokenizer.json).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from bpe import Tokenizer  # noqa: E402
from model import LlamaConfig, LlamaForCausalLM  # noqa: E402


def hf_config(cfg):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "vocab_size": cfg.vocab_size,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0",
    }


def config_from_hf(j):
    return LlamaConfig(
        vocab_size=j["vocab_size"], hidden_size=j["hidden_size"],
        intermediate_size=j["intermediate_size"], num_hidden_layers=j["num_hidden_layers"],
        num_attention_heads=j["num_attention_heads"], num_key_value_heads=j["num_key_value_heads"],
        max_position_embeddings=j["max_position_embeddings"], rms_norm_eps=j["rms_norm_eps"],
        rope_theta=j["rope_theta"], bos_token_id=j["bos_token_id"], eos_token_id=j["eos_token_id"],
        pad_token_id=j.get("pad_token_id", 2))


def export(model, cfg, tok, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)
        f.write("\n")
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
           "pad_token_id": cfg.pad_token_id, "do_sample": False, "max_new_tokens": 128,
           "temperature": 1.0, "top_p": 1.0, "top_k": 0, "transformers_version": "4.44.0"}
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    sd = {k: v.float().cpu() for k, v in model.state_dict().items()}
    st_io.save(os.path.join(out_dir, "model.safetensors"), sd, "BF16", {"format": "pt"})
    tok.save(out_dir)


def load_hf(out_dir, dtype=torch.float32):
    """Loads config.json + model.safetensors (bf16) back into tools/model.py, converted to dtype."""
    with open(os.path.join(out_dir, "config.json")) as f:
        cfg = config_from_hf(json.load(f))
    tensors, _ = st_io.load(os.path.join(out_dir, "model.safetensors"))
    model = LlamaForCausalLM(cfg)
    missing = set(model.state_dict()) ^ set(tensors)
    assert not missing, f"parameter name mismatch: {sorted(missing)}"
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()})
    return model.to(dtype).eval(), cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="tools/.ckpt/last.pt")
    ap.add_argument("--out", default="models/kvspan-brown")
    ap.add_argument("--tokenizer", default=None)
    a = ap.parse_args()
    ck = torch.load(a.ckpt, map_location="cpu")
    cfg = LlamaConfig(**ck["config"])
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(ck["model"])
    tok = Tokenizer.load(a.tokenizer or a.out)
    export(model, cfg, tok, a.out)
    print(f"exported {a.ckpt} -> {a.out}")


if __name__ == "__main__":
    main()
