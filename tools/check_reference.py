#!/usr/bin/python3
"""Self-check of MODEL/reference/ against the recipe's tokenizer and model:
  1. re-encodes every tokenizer fixture and compares ids; decode(encode(text)) == text;
  2. reloads the bf16 weights (fp32 compute) and recomputes prompt logits (full recompute);
  3. decodes each prompt + its greedy continuation incrementally with the KV cache of
     tools/model.py and compares logits with full recompute (max abs diff printed);
  4. checks the greedy continuations and the long-sequence logits.
Exit status 1 on any mismatch.

  /usr/bin/python3 tools/check_reference.py --model models/kvspan-brown
"""
import argparse
import json
import os
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import st_io  # noqa: E402
from bpe import Tokenizer  # noqa: E402
from export_hf import load_hf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(TOOLS), "models", "kvspan-brown"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ref = os.path.join(a.model, "reference")
    tok = Tokenizer.load(a.model)
    bad = 0

    fx = json.load(open(os.path.join(ref, "tokenizer_fixtures.json"), encoding="utf-8"))
    for c in fx["cases"]:
        ids = tok.encode(c["text"])
        if ids != c["ids"]:
            print(f"FAIL encode {c['text']!r}: {ids} != {c['ids']}")
            bad += 1
        if tok.decode(ids) != c["text"]:
            print(f"FAIL round trip {c['text']!r} -> {tok.decode(ids)!r}")
            bad += 1
    print(f"tokenizer: {len(fx['cases'])} fixtures re-encoded and round-tripped, {bad} failures")

    model, cfg = load_hf(a.model, torch.float32)
    tensors, _ = st_io.load(os.path.join(ref, "logits.safetensors"))
    pj = json.load(open(os.path.join(ref, "prompts.json"), encoding="utf-8"))
    worst_ref, worst_kv = 0.0, 0.0
    with torch.no_grad():
        for i, p in enumerate(pj["prompts"]):
            if tok.encode(p["text"], add_bos=True) != p["ids"]:
                print(f"FAIL prompt {i} ids")
                bad += 1
            seq = p["ids"] + p["greedy_new_ids"]
            full = model(torch.tensor([seq]))[0]
            n = len(p["ids"])
            d = (full[:n] - tensors[f"prompt.{i}.logits"]).abs().max().item()
            worst_ref = max(worst_ref, d)
            # greedy continuation consistent with full recompute
            pred = full[n - 1:-1].argmax(-1).tolist()
            if pred != p["greedy_new_ids"]:
                print(f"FAIL prompt {i} greedy ids")
                bad += 1
            # incremental decoding with KV cache: prefill the prompt, then one token at a time
            cache = model.new_cache()
            outs = [model(torch.tensor([p["ids"]]), cache, 0)[0]]
            for t in range(n, len(seq)):
                outs.append(model(torch.tensor([[seq[t]]]), cache, t)[0])
            kv = torch.cat(outs, 0)
            dkv = (kv - full).abs().max().item()
            worst_kv = max(worst_kv, dkv)
            print(f"prompt {i}: |logits - reference| max {d:.3e}; |kv-cache - full recompute| max {dkv:.3e} over {len(seq)} positions")
        ids = tensors["long.ids"].long().tolist()
        pos = tensors["long.positions"].long()
        full = model(torch.tensor([ids]))[0]
        d = (full[pos] - tensors["long.logits"]).abs().max().item()
        worst_ref = max(worst_ref, d)
        print(f"long: |logits - reference| max {d:.3e} at {len(pos)} positions")
    if worst_ref > a.tol or worst_kv > a.tol:
        print(f"FAIL logits tolerance {a.tol}: reference {worst_ref:.3e}, kv {worst_kv:.3e}")
        bad += 1
    print("check_reference: " + ("OK" if bad == 0 else f"{bad} FAILURES"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
