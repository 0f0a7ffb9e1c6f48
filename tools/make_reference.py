#!/usr/bin/python3
"""Writes the reference outputs the C++ runtime is tested against, into MODEL/reference/.

The model is loaded FROM the exported bf16 MODEL/model.safetensors, converted to fp32, and run
in fp32 on CPU with tools/model.py (full recompute, no KV cache). The tokenizer is MODEL/tokenizer.json.

  /usr/bin/python3 tools/make_reference.py --model models/kvspan-brown

Outputs (formats documented in MODEL/README.md):
  tokenizer_fixtures.json, prompts.json, logits.safetensors
then runs tools/check_reference.py on them.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import st_io  # noqa: E402
from bpe import Tokenizer, read_text  # noqa: E402
from export_hf import load_hf  # noqa: E402

MAX_NEW_TOKENS = 32
LONG_LEN = 1000
LONG_STRIDE = 32

PROMPTS = [
    "The jury said",
    "It was a cold morning in the city, and the",
    "The President of the United States announced today that",
    "She looked at him for a long time. Then she said,",
    "In 1961, the committee reported that the cost of the new program would be",
    "The most important thing about a good education is that it teaches a student how to think for himself, not",
]


def dump_json(obj, path):
    """Indented JSON with every list of numbers kept on one line."""
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    text = re.sub(r"\[[-0-9.e,\s]*\]", lambda m: "[" + ", ".join(m.group(0)[1:-1].split()).replace(",,", ",") + "]", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    assert json.loads(text) == json.loads(json.dumps(obj)), "compact JSON changed the content"


def tokenizer_cases(valid_text):
    para = valid_text.split("\n\n")[3].split("\n")
    held_out = " ".join(para[:4])
    return [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "The jury said it did find that many of Georgia's registration and election laws are outmoded.",
        " leading space",
        "   three leading spaces",
        "trailing space ",
        "trailing spaces   ",
        "multiple    spaces   between  words",
        "line one\nline two",
        "paragraph one.\n\nparagraph two.\n",
        "\n\n\n",
        "tab\tseparated\tvalues",
        " \t mixed \n whitespace \t\n",
        "In 1961 there were 3,275 votes, 12.5% of 26,000.",
        "0123456789 and 2026-11-22 and 3.14159",
        "Call 555-1234 now!!!",
        "Wait... what?! (Really?) [yes] {no} <maybe>",
        "He said -- quietly -- \"no\"; she said 'yes'.",
        "!!!???...,,,;;;:::",
        "it's",
        "don't can't won't",
        "we're they're you're",
        "I've we've they've",
        "I'm",
        "we'll you'll",
        "he'd she'd",
        "IT'S DON'T WE'RE I'VE I'M WE'LL HE'D",
        "the dog's bone, the dogs' bones",
        "café naïve résumé façade",
        "Ångström über straße",
        "日本語のテキスト",
        "中文 and English mixed",
        "emoji 🙂 and 👍🏽 and 🇺🇸",
        "Ελληνικά и русский",
        "",
        " ",
        "a",
        "end of text<|eos|>",
        "<|bos|>start<|eos|> middle <|eos|><|eos|>end",
        "not special: <|eos| <eos> |eos|>",
        held_out,
    ]


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids], dtype=torch.long))[0].float()


@torch.no_grad()
def greedy(model, ids, n):
    ids = list(ids)
    new, margins = [], []
    for _ in range(n):
        last = logits_of(model, ids)[-1]
        top2 = torch.topk(last, 2)
        nxt = int(top2.indices[0])
        margins.append(float(top2.values[0] - top2.values[1]))
        new.append(nxt)
        ids.append(nxt)
    return new, margins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(TOOLS), "models", "kvspan-brown"))
    ap.add_argument("--valid-corpus", default=os.path.join(TOOLS, "corpus", "brown_valid.txt.xz"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ref = os.path.join(a.model, "reference")
    os.makedirs(ref, exist_ok=True)
    tok = Tokenizer.load(a.model)
    model, cfg = load_hf(a.model, torch.float32)
    valid_text = read_text(a.valid_corpus)

    cases = [{"text": t, "ids": tok.encode(t)} for t in tokenizer_cases(valid_text)]
    dump_json({"tokenizer": "tokenizer.json", "add_bos": False, "cases": cases},
              os.path.join(ref, "tokenizer_fixtures.json"))

    tensors = {}
    prompts = []
    for i, text in enumerate(PROMPTS):
        ids = tok.encode(text, add_bos=True)
        assert 5 <= len(ids) <= 40, (text, len(ids))
        new, margins = greedy(model, ids, MAX_NEW_TOKENS)
        tensors[f"prompt.{i}.logits"] = logits_of(model, ids)
        prompts.append({"text": text, "ids": ids, "greedy_new_ids": new,
                        "greedy_text": tok.decode(new),
                        "greedy_min_margin": min(margins),
                        "greedy_margins": [round(m, 6) for m in margins]})
        print(f"prompt {i}: {len(ids)} tokens -> {tok.decode(new)!r} (min top1-top2 margin {min(margins):.4f})")
    dump_json({"max_new_tokens": MAX_NEW_TOKENS, "bos_token_id": tok.bos_id,
               "eos_token_id": tok.eos_id, "stop_at_eos": False, "prompts": prompts},
              os.path.join(ref, "prompts.json"))

    # long held-out sequence: bos + the first 999 tokens of the 2nd validation document
    doc = valid_text.split("\n\n")[1]
    long_ids = tok.encode(doc, add_bos=True)[:LONG_LEN]
    assert len(long_ids) == LONG_LEN
    positions = list(range(0, LONG_LEN, LONG_STRIDE))
    if positions[-1] != LONG_LEN - 1:
        positions.append(LONG_LEN - 1)
    full = logits_of(model, long_ids)
    tensors["long.ids"] = torch.tensor(long_ids, dtype=torch.int32)
    tensors["long.positions"] = torch.tensor(positions, dtype=torch.int32)
    tensors["long.logits"] = full[positions]
    nll = torch.nn.functional.cross_entropy(full[:-1], torch.tensor(long_ids[1:]))
    print(f"long: {LONG_LEN} tokens, {len(positions)} positions, mean nll {nll.item():.4f}")
    dtypes = {k: ("I32" if k.startswith("long.") and not k.endswith("logits") else "F32") for k in tensors}
    st_io.save(os.path.join(ref, "logits.safetensors"), tensors, dtypes,
               {"format": "pt", "long_mean_nll": f"{nll.item():.6f}"})
    print(f"wrote {ref}: {os.path.getsize(os.path.join(ref, 'logits.safetensors'))} bytes of logits")
    if not a.no_check:
        subprocess.run([sys.executable, os.path.join(TOOLS, "check_reference.py"), "--model", a.model,
                        "--threads", str(a.threads)], check=True)


if __name__ == "__main__":
    main()
