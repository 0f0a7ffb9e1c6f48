#!/usr/bin/python3
"""Evaluates an exported model (HF layout, loaded by tools/export_hf.load_hf) on a held-out task
set from tools/tasks.py and on the validation text, and writes MODEL/eval.json.

  /usr/bin/python3 tools/tasks.py --heldout --seed 7 --n 100 --context-tokens 2048 --out /tmp/heldout.jsonl
  /usr/bin/python3 tools/eval_tasks.py --model models/kvspan-retrieval --heldout /tmp/heldout.jsonl [--device cuda]

Scoring: teacher-forced exact match. The prompt is [<|bos|>] + encode(context + question), the
answer ids are encode(answer); one forward pass over prompt + answer[:-1], and an instance is
correct iff the argmax at every answer position equals the answer token. This is exactly
"greedy decoding of len(answer) tokens reproduces the answer" (greedy step i sees the answer's
first i tokens iff the earlier steps were right), at one forward pass per instance; what the model
would emit after the answer is not scored. Every multiquery question is scored on its own
(shared context + that question), the way a reused, compressed context is asked later questions.

The model runs in fp32 (weights are bf16, converted exactly), on CPU or CUDA; --amp uses bf16
autocast on CUDA instead. Rows are batched with right padding (causal attention, so padding
after a sequence cannot change its logits).

eval.json keys: kv_recall_exact, needle_exact (the MINIMUM over needle depths),
needle_exact_by_depth {depth: accuracy}, needle_exact_mean, multiquery_exact,
multiquery_exact_by_variant, kv_recall_exact_by_depth (queried line position, 5 bins),
kv_recall_first_token (the first answer token alone: the look-up), text_val_loss (mean next-token NLL in nats over the whole validation split in windows of
max_position_embeddings tokens, as tools/train.py computes it), counts and provenance.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
from bpe import Tokenizer, read_text  # noqa: E402
from export_hf import load_hf  # noqa: E402


def _autocast(amp):
    import contextlib
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def encode_row(tok, r):
    prompt = tok.encode(r["context"] + r["question"], add_bos=True)
    ans = tok.encode(r["answer"])
    return prompt, ans


@torch.no_grad()
def exact_match(model, tok, rows, device, amp=False, batch=8, max_len=None, first_tokens=None):
    """Teacher-forced exact match of every answer token (of the first `first_tokens` answer
    tokens when given: e.g. 1 = is the look-up itself right); returns a list of bools (one per row)."""
    was_training = model.training
    model.eval()
    enc = [encode_row(tok, r) for r in rows]
    out = [False] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(enc[i][0]) + len(enc[i][1]))
    for b0 in range(0, len(order), batch):
        idx = order[b0:b0 + batch]
        seqs = [enc[i][0] + enc[i][1][:-1] for i in idx]
        T = max(len(s) for s in seqs)
        if max_len is not None:
            assert T <= max_len, f"instance of {T} tokens exceeds the model context {max_len}"
        x = torch.full((len(idx), T), tok.pad_id, dtype=torch.long)
        for j, s in enumerate(seqs):
            x[j, :len(s)] = torch.tensor(s)
        with _autocast(amp):
            logits = model(x.to(device))
        pred = logits.float().argmax(-1).cpu()
        for j, i in enumerate(idx):
            p, a = enc[i]
            got = pred[j, len(p) - 1: len(p) - 1 + len(a)].tolist()
            out[i] = got[:first_tokens] == a[:first_tokens] if first_tokens else got == a
    if was_training:
        model.train()
    return out


@torch.no_grad()
def text_val_loss(model, tok, corpus, L, device, amp=False, batch=4):
    """Same definition as tools/train.py: documents [bos]+ids+[eos] concatenated, non-overlapping
    windows of L+1 tokens, mean NLL over all L predicted tokens of every full window."""
    ids = []
    for doc in read_text(corpus).split("\n\n"):
        if doc.strip():
            ids.append(tok.bos_id)
            ids.extend(tok.encode(doc))
            ids.append(tok.eos_id)
    ids = np.array(ids, dtype=np.int64)
    n = (len(ids) - 1) // L
    chunks = np.stack([ids[i * L: i * L + L + 1] for i in range(n)])
    tot, cnt = 0.0, 0
    for i in range(0, n, batch):
        x = torch.from_numpy(chunks[i:i + batch]).to(device)
        with _autocast(amp):
            logits = model(x[:, :-1])
        tot += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                               reduction="sum").item()
        cnt += x[:, 1:].numel()
    return tot / cnt, cnt


def summarize(rows, ok):
    def acc(sel):
        v = [o for o, r in zip(ok, rows) if sel(r)]
        return (sum(v) / len(v) if v else None), len(v)

    res = {}
    res["kv_recall_exact"], n_kv = acc(lambda r: r["task"] == "kv")
    depths = sorted({r["depth"] for r in rows if r["task"] == "needle"})
    by_depth = {str(d): acc(lambda r, d=d: r["task"] == "needle" and r["depth"] == d)[0] for d in depths}
    res["needle_exact"] = min(by_depth.values()) if by_depth else None
    res["needle_exact_by_depth"] = by_depth
    res["needle_exact_mean"], n_needle = acc(lambda r: r["task"] == "needle")
    res["multiquery_exact"], n_mq = acc(lambda r: r["task"] == "multiquery")
    variants = sorted({r.get("variant") for r in rows if r["task"] == "multiquery"})
    res["multiquery_exact_by_variant"] = {
        v: acc(lambda r, v=v: r["task"] == "multiquery" and r.get("variant") == v)[0] for v in variants}
    bins = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0001]
    res["kv_recall_exact_by_depth"] = {
        f"{lo:.1f}-{min(hi, 1.0):.1f}": acc(lambda r, lo=lo, hi=hi: r["task"] == "kv" and lo <= r["depth"] < hi)[0]
        for lo, hi in zip(bins[:-1], bins[1:])}
    res["counts"] = {"kv": n_kv, "needle": n_needle, "multiquery": n_mq,
                     "needle_per_depth": {str(d): sum(1 for r in rows if r["task"] == "needle" and r["depth"] == d)
                                          for d in depths}}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="exported model dir (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--heldout", required=True, help="JSONL from tools/tasks.py --heldout")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only); default fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--valid-corpus", default=os.path.join(TOOLS, "corpus", "brown_valid.txt.xz"))
    ap.add_argument("--limit", type=int, default=None, help="score only the first N rows (smoke tests)")
    ap.add_argument("--out-json", default=None, help="default: MODEL/eval.json")
    ap.add_argument("--baseline-model", default=None,
                    help="another model dir (e.g. models/kvspan-brown) scored on the same rows and text; "
                         "its numbers go under eval.json's \"baseline\" key")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    amp = a.amp and a.device == "cuda"
    tok = Tokenizer.load(a.model)
    model, cfg = load_hf(a.model, torch.float32)
    model = model.to(device).eval()
    with open(a.heldout, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if a.limit:
        rows = rows[:a.limit]
    t0 = time.time()
    ok = exact_match(model, tok, rows, device, amp, a.batch, cfg.max_position_embeddings)
    kv_rows = [r for r in rows if r["task"] == "kv"]
    kv_first = exact_match(model, tok, kv_rows, device, amp, a.batch, cfg.max_position_embeddings, first_tokens=1)
    t_tasks = time.time() - t0
    res = summarize(rows, ok)
    # the look-up alone (is the first answer token, the value's first digit, right): with ~9
    # first digits to choose from, chance is ~0.11; exact match also needs the digits after it
    res["kv_recall_first_token"] = sum(kv_first) / len(kv_first) if kv_first else None
    t0 = time.time()
    vl, vn = text_val_loss(model, tok, a.valid_corpus, cfg.max_position_embeddings, device, amp)
    res["text_val_loss"] = vl
    res["text_val_ppl"] = math.exp(vl)
    res["text_val_tokens"] = vn
    res["text_val_window"] = cfg.max_position_embeddings
    with open(a.heldout, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    seeds = sorted({r["seed"][0] for r in rows}) if rows and isinstance(rows[0].get("seed"), list) else None
    max_prompt = max(len(encode_row(tok, r)[0]) for r in rows)
    res["heldout"] = {"file": os.path.basename(a.heldout), "sha256": sha, "rows": len(rows), "seeds": seeds,
                      "max_prompt_tokens": max_prompt,
                      "regenerate": f"/usr/bin/python3 tools/tasks.py --heldout --seed {seeds[0] if seeds else '?'} "
                                    f"--n N --context-tokens {cfg.max_position_embeddings} --out FILE"}
    res["method"] = ("teacher-forced exact match of all answer tokens (== greedy decoding of the answer), "
                     f"{'bf16 autocast' if amp else 'fp32'} on {a.device}, from the bf16 weights")
    res["seconds"] = {"tasks": round(t_tasks, 1), "text": round(time.time() - t0, 1)}
    if a.baseline_model:
        bmodel, bcfg = load_hf(a.baseline_model, torch.float32)
        bmodel = bmodel.to(device).eval()
        btok = Tokenizer.load(a.baseline_model)
        bok = exact_match(bmodel, btok, rows, device, amp, a.batch, bcfg.max_position_embeddings)
        bres = summarize(rows, bok)
        bvl, _ = text_val_loss(bmodel, btok, a.valid_corpus, bcfg.max_position_embeddings, device, amp)
        res["baseline"] = {"model": os.path.basename(os.path.normpath(a.baseline_model)), "text_val_loss": bvl,
                           **{k: bres[k] for k in ("kv_recall_exact", "needle_exact", "needle_exact_mean",
                                                   "needle_exact_by_depth", "multiquery_exact")}}
        res["baseline_text_val_loss"] = bvl
    out = a.out_json or os.path.join(a.model, "eval.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"
    print(f"kv_recall_exact {fmt(res['kv_recall_exact'])} (n={res['counts']['kv']}), first answer token "
          f"{fmt(res['kv_recall_first_token'])}")
    print(f"needle_exact (min over depths) {fmt(res['needle_exact'])}, mean {fmt(res['needle_exact_mean'])}")
    for d, v in res["needle_exact_by_depth"].items():
        print(f"  needle depth {d}: {fmt(v)} (n={res['counts']['needle_per_depth'][d]})")
    print(f"multiquery_exact {fmt(res['multiquery_exact'])} {res['multiquery_exact_by_variant']}")
    print(f"text_val_loss {vl:.4f} (ppl {math.exp(vl):.2f}, {vn} tokens in windows of {cfg.max_position_embeddings})")
    if "baseline" in res:
        b = res["baseline"]
        print(f"baseline {b['model']}: kv {fmt(b['kv_recall_exact'])} needle(min) {fmt(b['needle_exact'])} "
              f"multiquery {fmt(b['multiquery_exact'])} text_val_loss {b['text_val_loss']:.4f}")
    print(f"wrote {out} ({res['seconds']})")


if __name__ == "__main__":
    main()
