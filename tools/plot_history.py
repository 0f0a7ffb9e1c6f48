#!/usr/bin/python3
"""Writes a training run's curves from its checkpoint: OUT/curves.png (loss, and task exact match
at the training length of the moment) and OUT/history.json (the same numbers as text).

  /usr/bin/python3 tools/plot_history.py --ckpt tools/.ckpt-retrieval/final.pt --out models/kvspan-retrieval

The periodic task evaluation (tools/train.py with --task-mix > 0) scores a small held-out set
(seed --heldout-seed + 1000, --task-eval-n instances per task) built at the sequence length being
trained at that moment, so each point of the accuracy panel is labelled with that length.
"""
import argparse
import json
import os

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ck = torch.load(a.ckpt, map_location="cpu")
    hist = ck["state"]["history"]
    with open(os.path.join(a.out, "history.json"), "w") as f:
        json.dump({"curriculum": ck["args"].get("curriculum"), "history": hist}, f, indent=0)
        f.write("\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mins = [h["elapsed"] / 60 for h in hist]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    tr = [(m, h["train"]) for m, h in zip(mins, hist) if h.get("train") is not None]
    ax1.plot([m for m, _ in tr], [v for _, v in tr], label="train loss (EMA; task answers + text, per-document mean)")
    ax1.plot(mins, [h["valid"] for h in hist], label="Brown validation loss (8 x 1024 tokens)")
    ax1.set_ylabel("nats/token")
    ax1.legend()
    ax1.grid(alpha=0.3)
    labels = {"kv1": "kv first answer token", "copy": "copy documents (token accuracy)"}
    for t, style in (("kv", "o-"), ("needle", "s-"), ("multiquery", "^-"), ("kv1", "o:"), ("copy", "x--")):
        pts = [(m, h[t]) for m, h in zip(mins, hist) if t in h and (t != "multiquery" or h.get("task_len", 0) >= 256)]
        if pts:
            ax2.plot([m for m, _ in pts], [v for _, v in pts], style, label=labels.get(t, f"{t} exact"))
    last = None
    for m, h in zip(mins, hist):
        if h.get("task_len") != last and h.get("task_len"):
            ax2.axvline(m, color="grey", alpha=0.3)
            ax2.text(m, 1.02, str(h["task_len"]), fontsize=8, color="grey")
            last = h["task_len"]
    ax2.set_ylim(-0.02, 1.08)
    ax2.set_xlabel("training minutes (one CPU thread; CPU time with --clock cpu)")
    ax2.set_ylabel("exact match at the current training length (grey)")
    ax2.legend(loc="center left")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "curves.png"), dpi=80)
    print(f"wrote {a.out}/curves.png and history.json ({len(hist)} points)")


if __name__ == "__main__":
    main()
