#!/usr/bin/python3
"""Converts a kvspan checkpoint (a Hugging Face Llama directory: config.json, model.safetensors
in bf16, f16 or f32, tokenizer.json with a GPT-2-style byte-level BPE) to a GGUF file that
llama.cpp loads, with the gguf-py package of the llama.cpp tree that
bench/peers/build_llama_cpp.sh unpacked (llama.cpp's own convert_hf_to_gguf.py needs
`transformers`, which Debian 12 does not package).

  /usr/bin/python3 bench/peers/kvspan_to_gguf.py --model models/kvspan-brown \\
      --outtype f32 --out /tmp/kvspan-peers/gguf/kvspan-brown-f32.gguf [--gguf-py DIR]

What it writes, following llama.cpp's conversion/llama.py (LlamaModel) at the pinned commit:
- metadata: general.architecture llama, context length, embedding / feed-forward lengths,
  block count, heads and KV heads, key/value length (head_dim), rope dimension count and
  freq base, RMSNorm epsilon, vocab size, file type;
- llama3 RoPE scaling (config.json rope_scaling.rope_type == "llama3") as the rope_freqs.weight
  tensor of per-frequency divisors, computed as llama.cpp's converter does;
- tensors under llama.cpp's names (token_embd.weight, blk.N.attn_q.weight, ..., output.weight); the
  matrices in --outtype (f32, or bf16 rounded to nearest even from f32 sources), norms f32;
  no output.weight when the embeddings are tied (llama.cpp then reuses token_embd);
- attn_q / attn_k rows permuted per head from Hugging Face's rotate-half RoPE layout (pairs
  (i, i + d/2)) to llama.cpp's interleaved one (pairs (2i, 2i + 1)): row 2i <- row i,
  row 2i + 1 <- row i + d/2 (LlamaModel.permute);
- the tokenizer as tokenizer.ggml.model "gpt2", pre-tokenizer "gpt-2" (the GPT-2 regex that
  kvspan's tokenizer uses), tokens in the byte-level alphabet of tokenizer.json, token types
  (added special tokens CONTROL, ids the vocab lacks UNUSED "[PADi]"), merges, bos / eos /
  pad ids and add_bos from gguf.SpecialVocab.
q8_0 and q4_0 files come from this one's f32 through the built llama-quantize.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--out", required=True, help="GGUF file to write")
    p.add_argument("--outtype", choices=("f32", "bf16"), default="f32")
    p.add_argument("--gguf-py", default=os.path.join(os.environ.get("KVSPAN_PEERS_DIR", "/tmp/kvspan-peers"),
                                                     "llama.cpp", "gguf-py"),
                   help="gguf-py directory of the llama.cpp tree (default: $KVSPAN_PEERS_DIR/llama.cpp/gguf-py)")
    return p.parse_args()


class SafetensorsFile:
    """Read-only view of one .safetensors file: tensors as numpy arrays over a memory map."""

    def __init__(self, path):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
        self.header.pop("__metadata__", None)
        self.base = 8 + n
        self.map = np.memmap(path, dtype=np.uint8, mode="r")

    def names(self):
        return list(self.header)

    def raw(self, name):
        """The tensor's stored values: bf16 as uint16 bits, f16 / f32 as themselves."""
        info = self.header[name]
        if info["dtype"] not in _DTYPES:
            raise SystemExit(f"{name}: dtype {info['dtype']} is not supported (bf16, f16, f32)")
        b, e = info["data_offsets"]
        return self.map[self.base + b:self.base + e].view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def to_f32(raw):
    if raw.dtype == np.uint16:  # bf16 bits: the upper half of an f32, exactly
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def permute_rope_rows(w, n_heads):
    """HF rotate-half rows of each head to llama.cpp's interleaved pairs (LlamaModel.permute)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(scaling, theta, head_dim):
    """rope_freqs.weight: the divisor of each RoPE frequency (conversion/llama.py, llama3 type)."""
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_ctx = scaling.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / (theta ** (np.float32(i) / head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def tensor_plan(gguf, st, config):
    """[(gguf name, HF name or None, rope heads to permute or 0)] in llama.cpp's order."""
    T, names = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    plan = [(names[T.TOKEN_EMBD] + ".weight", "model.embed_tokens.weight", 0)]
    per_layer = [(T.ATTN_NORM, "input_layernorm.weight", 0), (T.ATTN_Q, "self_attn.q_proj.weight", n_heads),
                 (T.ATTN_K, "self_attn.k_proj.weight", n_kv), (T.ATTN_V, "self_attn.v_proj.weight", 0),
                 (T.ATTN_OUT, "self_attn.o_proj.weight", 0), (T.FFN_NORM, "post_attention_layernorm.weight", 0),
                 (T.FFN_GATE, "mlp.gate_proj.weight", 0), (T.FFN_UP, "mlp.up_proj.weight", 0),
                 (T.FFN_DOWN, "mlp.down_proj.weight", 0)]
    for layer in range(config["num_hidden_layers"]):
        for tensor, hf, heads in per_layer:
            plan.append((names[tensor].format(bid=layer) + ".weight", f"model.layers.{layer}.{hf}", heads))
    plan.append((names[T.OUTPUT_NORM] + ".weight", "model.norm.weight", 0))
    if "lm_head.weight" in st.header:
        plan.append((names[T.OUTPUT] + ".weight", "lm_head.weight", 0))
    elif not config.get("tie_word_embeddings", False):
        raise SystemExit("no lm_head.weight and tie_word_embeddings is not set")
    missing = [hf for _, hf, _ in plan if hf not in st.header]
    if missing:
        raise SystemExit(f"tensors missing from model.safetensors: {missing[:5]}")
    unused = set(st.names()) - {hf for _, hf, _ in plan}
    if unused:
        raise SystemExit(f"tensors this converter does not map (biases? another architecture?): {sorted(unused)[:5]}")
    return plan


def add_vocab(gguf, writer, model_dir, vocab_size):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    model, pre = tok["model"], tok.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise SystemExit("tokenizer.json is not a GPT-2-style byte-level BPE (model BPE, pre_tokenizer ByteLevel)")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    if max(by_id) >= vocab_size:
        raise SystemExit(f"tokenizer ids reach {max(by_id)}, beyond config.json vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL if i not in added else
                         gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True)  # merges, bos/eos/pad ids, add_bos/add_eos
    if not special.merges:
        raise SystemExit("tokenizer.json has no merges")
    special.add_to_gguf(writer)


def main():
    args = parse_args()
    if not os.path.isdir(os.path.join(args.gguf_py, "gguf")):
        raise SystemExit(f"no gguf-py at {args.gguf_py}: run bench/peers/build_llama_cpp.sh first, or pass --gguf-py")
    sys.path.insert(0, args.gguf_py)
    import gguf  # noqa: E402  (from the llama.cpp tree, not an installed package)

    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") != "llama":
        raise SystemExit(f"model_type {config.get('model_type')!r}: only llama checkpoints are converted")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise SystemExit("biases are not converted")
    st = SafetensorsFile(os.path.join(args.model, "model.safetensors"))
    n_heads, n_kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    config["num_key_value_heads"] = n_kv
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    theta = float(config.get("rope_theta", 10000.0))
    plan = tensor_plan(gguf, st, config)

    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name(os.path.basename(os.path.normpath(args.model)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if args.outtype == "f32" else gguf.LlamaFileType.MOSTLY_BF16)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    add_vocab(gguf, writer, args.model, config["vocab_size"])

    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type"))
    extra = {}
    if rope_type == "llama3":
        extra[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = llama3_rope_factors(scaling, theta, head_dim)
    elif rope_type not in (None, "default"):
        raise SystemExit(f"rope_scaling type {rope_type!r} is not converted")

    # Tensor infos first, then the data one tensor at a time (the 1B shape is 5 GB in f32).
    bf16 = args.outtype == "bf16"
    for name, hf, _ in plan:
        shape = st.header[hf]["shape"]
        as_bf16 = bf16 and len(shape) > 1
        nbytes = int(np.prod(shape)) * (2 if as_bf16 else 4)
        writer.add_tensor_info(name, shape, np.dtype(np.uint16 if as_bf16 else np.float32), nbytes,
                               raw_dtype=gguf.GGMLQuantizationType.BF16 if as_bf16 else gguf.GGMLQuantizationType.F32)
    for name, arr in extra.items():
        writer.add_tensor_info(name, arr.shape, arr.dtype, arr.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, hf, heads in plan:
        raw = st.raw(hf)
        if bf16 and raw.ndim > 1:
            data = raw if raw.dtype == np.uint16 else gguf.quants.quantize(to_f32(raw), gguf.GGMLQuantizationType.BF16).view(np.uint16).reshape(raw.shape)
        else:
            data = to_f32(raw)
        if heads:
            data = permute_rope_rows(data, heads)
        writer.write_tensor_data(np.ascontiguousarray(data))
    for arr in extra.values():
        writer.write_tensor_data(arr)
    writer.close()
    print(f"{args.out}: {len(plan) + len(extra)} tensors, {args.outtype}, {os.path.getsize(args.out) / 1e9:.3f} GB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
