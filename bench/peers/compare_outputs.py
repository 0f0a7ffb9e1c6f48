#!/usr/bin/python3
"""Compares what bench/peers/kvspan_ids and llama_ids printed and wrote for the same id files
(bench/peers/ids_io.h), and both against the PyTorch reference of models/kvspan-brown
(reference/prompts.json, reference/logits.safetensors). Prints a Markdown section.

  /usr/bin/python3 bench/peers/compare_outputs.py --reference models/kvspan-brown/reference \
      --write-prompt-ids DIR/prompts.ids
  /usr/bin/python3 bench/peers/compare_outputs.py --work DIR --reference models/kvspan-brown/reference

With --also MODEL_DIR it prints the paragraph of compare_outputs.sh --also instead (also.ids,
E.also.txt, E.also.logits). DIR holds, from bench/peers/compare_outputs.sh: prompts.ids (the reference prompts, then
long.ids), windows.ids (held-out windows), and for each engine E in kvspan, llama:
E.prompts.txt / E.prompts.logits and E.windows.txt / E.windows.logits.
"""
import argparse
import json
import os
import re
import struct

import numpy as np

_SEQ = re.compile(r"^seq (\d+): tokens (\d+), nll ([-0-9.e+]+), greedy(.*)$")
_TOTAL = re.compile(r"^total: sequences (\d+), predicted (\d+), mean nll ([-0-9.e+]+), ppl ([0-9.e+]+)$")


def read_report(path):
    """(per-sequence [(tokens, nll, greedy ids)], (predicted, mean nll, ppl))."""
    seqs, total = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if m := _SEQ.match(line.strip()):
                seqs.append((int(m[2]), float(m[3]), [int(x) for x in m[4].split()]))
            elif m := _TOTAL.match(line.strip()):
                total = (int(m[2]), float(m[3]), float(m[4]))
    if total is None:
        raise SystemExit(f"{path}: no 'total:' line")
    return seqs, total


def read_ids(path):
    with open(path, encoding="utf-8") as f:
        return [[int(x) for x in line.split()] for line in f if line.strip()]


def read_logits(path, seqs, vocab):
    flat = np.fromfile(path, dtype=np.float32)
    want = sum(len(s) for s in seqs) * vocab
    if flat.size != want:
        raise SystemExit(f"{path}: {flat.size} floats, expected {want}")
    out, at = [], 0
    for s in seqs:
        out.append(flat[at:at + len(s) * vocab].reshape(len(s), vocab))
        at += len(s) * vocab
    return out


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    kinds = {"F32": np.float32, "I32": np.int32}
    return {name: np.frombuffer(data[i["data_offsets"][0]:i["data_offsets"][1]], dtype=kinds[i["dtype"]]).reshape(i["shape"])
            for name, i in header.items()}


def same_prefix(a, b):
    """How many leading tokens two continuations share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def write_prompt_ids(reference, path):
    """The reference prompts' ids, one per line, then long.ids: the first id file."""
    with open(os.path.join(reference, "prompts.json"), encoding="utf-8") as f:
        lines = [" ".join(map(str, pr["ids"])) for pr in json.load(f)["prompts"]]
    lines.append(" ".join(map(str, read_safetensors(os.path.join(reference, "logits.safetensors"))["long.ids"].tolist())))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_random_ids(config_path, path, count=200, seed=5):
    """`count` ids drawn uniformly from the vocabulary (a fixed seed): the --also id file."""
    with open(config_path, encoding="utf-8") as f:
        vocab = json.load(f)["vocab_size"]
    ids = np.random.default_rng(seed).integers(0, vocab, size=count)
    with open(path, "w", encoding="utf-8") as f:
        f.write(" ".join(map(str, ids.tolist())) + "\n")


def also_paragraph(work, model):
    """The --also check: both engines' logits of the random ids of another checkpoint."""
    with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    seqs = read_ids(os.path.join(work, "also.ids"))
    vocab = config["vocab_size"]
    reps = {e: read_report(os.path.join(work, f"{e}.also.txt")) for e in ("kvspan", "llama")}
    a, b = (read_logits(os.path.join(work, f"{e}.also.logits"), seqs, vocab)[0] for e in ("kvspan", "llama"))
    scale = float(np.max(np.abs(a)))
    scaling = config.get("rope_scaling") or {}
    rope = (f"{scaling.get('rope_type')} RoPE scaling (factor {scaling.get('factor')})" if scaling else "no RoPE scaling")
    tied = "tied" if config.get("tie_word_embeddings") else "untied"
    same_greedy = reps["kvspan"][0][0][2] == reps["llama"][0][0][2]
    return (f"Also `{model}` ({config['num_hidden_layers']} layers, {config['num_attention_heads']} heads / "
            f"{config['num_key_value_heads']} KV heads, {rope}, {tied} embeddings), f32 in both engines, "
            f"{len(seqs[0])} random token ids: max |logit difference| {max_diff(a, b):.2e} with logits up to "
            f"{scale:.1f} in magnitude ({max_diff(a, b) / scale:.1e} of it), top-1 agreement "
            f"{int(np.sum(np.argmax(a, 1) == np.argmax(b, 1)))}/{len(seqs[0])}, greedy continuations "
            f"({len(reps['kvspan'][0][0][2])} tokens) {'identical' if same_greedy else 'DIFFERENT'}, mean NLL "
            f"{reps['kvspan'][1][1]:.6f} vs {reps['llama'][1][1]:.6f}.")


def max_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", help="directory of the engines' outputs")
    p.add_argument("--reference", help="models/kvspan-brown/reference")
    p.add_argument("--command", default="", help="the command line, for the section's first line")
    p.add_argument("--write-prompt-ids", metavar="PATH", help="only write the reference prompts' id file to PATH")
    p.add_argument("--write-random-ids", metavar="PATH", help="only write random ids for --model-config to PATH")
    p.add_argument("--model-config", help="config.json of the --write-random-ids model")
    p.add_argument("--also", metavar="MODEL_DIR", help="only print the --also paragraph of MODEL_DIR from --work")
    args = p.parse_args()
    if args.write_prompt_ids:
        write_prompt_ids(args.reference, args.write_prompt_ids)
        return
    if args.write_random_ids:
        write_random_ids(args.model_config, args.write_random_ids)
        return
    if not args.work:
        p.error("--work is required")
    if args.also:
        print(also_paragraph(args.work, args.also))
        return
    if not args.reference:
        p.error("--reference is required")
    w = lambda name: os.path.join(args.work, name)  # noqa: E731

    with open(os.path.join(args.reference, "prompts.json"), encoding="utf-8") as f:
        prompts = json.load(f)["prompts"]
    ref = read_safetensors(os.path.join(args.reference, "logits.safetensors"))
    seqs_p, seqs_w = read_ids(w("prompts.ids")), read_ids(w("windows.ids"))
    vocab = ref["prompt.0.logits"].shape[1]
    engines = ("kvspan", "llama")
    rep = {e: {part: read_report(w(f"{e}.{part}.txt")) for part in ("prompts", "windows")} for e in engines}
    lg = {e: {"prompts": read_logits(w(f"{e}.prompts.logits"), seqs_p, vocab),
              "windows": read_logits(w(f"{e}.windows.logits"), seqs_w, vocab)} for e in engines}

    # Greedy continuations of the reference prompts: reference vs kvspan vs llama.cpp.
    n_prompts = len(prompts)
    greedy_rows, all_match = [], True
    for i, pr in enumerate(prompts):
        if seqs_p[i] != pr["ids"]:
            raise SystemExit(f"prompts.ids line {i} is not reference prompt {i}'s ids")
        ref_ids = pr["greedy_new_ids"]
        k_ids, l_ids = rep["kvspan"]["prompts"][0][i][2], rep["llama"]["prompts"][0][i][2]
        all_match &= k_ids == l_ids == ref_ids
        greedy_rows.append(f"| {i} | {len(pr['ids'])} | {same_prefix(k_ids, ref_ids)}/{len(ref_ids)} | "
                           f"{same_prefix(l_ids, ref_ids)}/{len(ref_ids)} | {same_prefix(k_ids, l_ids)}/{len(ref_ids)} | "
                           f"{pr['greedy_min_margin']:.2e} |")

    # Logits: every position of every prompt and window, kvspan vs llama.cpp; each vs PyTorch.
    d_kl = max(max_diff(a, b) for part in ("prompts", "windows") for a, b in zip(lg["kvspan"][part], lg["llama"][part]))
    d_ref = {}
    for e in engines:
        d = [max_diff(lg[e]["prompts"][i], ref[f"prompt.{i}.logits"]) for i in range(n_prompts)]
        long_rows = lg[e]["prompts"][n_prompts][ref["long.positions"]]
        d.append(max_diff(long_rows, ref["long.logits"]))
        d_ref[e] = max(d)
    if seqs_p[n_prompts] != ref["long.ids"].tolist():
        raise SystemExit(f"prompts.ids line {n_prompts} is not reference long.ids")
    long_nll = {e: rep[e]["prompts"][0][n_prompts][1] / (len(seqs_p[n_prompts]) - 1) for e in engines}
    ppl = {e: rep[e]["windows"][1] for e in engines}
    top1 = sum(int(np.sum(np.argmax(a, 1) == np.argmax(b, 1))) for a, b in zip(lg["kvspan"]["windows"], lg["llama"]["windows"]))
    positions = sum(len(s) for s in seqs_w)

    print(f"Measured by `{args.command}`: kvspan `build/bench/kvspan_ids --weights f32` (the C++ runtime) and "
          f"llama.cpp `llama_ids` (libllama, f32 GGUF from `kvspan_to_gguf.py`, f32 KV cache, no flash attention) "
          f"fed the same token ids; PyTorch = models/kvspan-brown/reference (tools/model.py, fp32).\n")
    print("| check | kvspan | llama.cpp |")
    print("|---|---:|---:|")
    print(f"| max \\|logit − PyTorch\\| (6 prompts, all positions; long.ids at its 33 positions) | {d_ref['kvspan']:.2e} | {d_ref['llama']:.2e} |")
    print(f"| mean NLL of long.ids ({len(seqs_p[n_prompts]) - 1} predictions; PyTorch 5.232857) | {long_nll['kvspan']:.6f} | {long_nll['llama']:.6f} |")
    print(f"| perplexity, {len(seqs_w)} held-out windows of {len(seqs_w[0])} tokens ({ppl['kvspan'][0]} predictions) "
          f"| {ppl['kvspan'][2]:.4f} | {ppl['llama'][2]:.4f} |")
    print(f"\nkvspan vs llama.cpp: max |logit difference| {d_kl:.2e} over every position of the prompts, long.ids and "
          f"the windows ({sum(len(s) for s in seqs_p) + positions} positions × {vocab}); top-1 agreement on the "
          f"windows {top1}/{positions}; greedy continuations (32 tokens, one decode step each after the prompt) "
          f"{'all identical to PyTorch' if all_match else 'NOT all identical'}:\n")
    print("| prompt | tokens | leading tokens kvspan = PyTorch | llama.cpp = PyTorch | kvspan = llama.cpp | PyTorch's min top-1 margin |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(greedy_rows))


if __name__ == "__main__":
    main()
