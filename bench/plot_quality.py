#!/usr/bin/python3
"""Plots docs/quality.csv (written by bench/quality_bench) into docs/quality.png.

Usage: /usr/bin/python3 bench/plot_quality.py [docs/quality.csv] [docs/quality.png]
Two panels against bytes per token (log x): perplexity change (%) and 1 - top-1
agreement (log y), one marker per policy, coloured by family, one marker shape per model.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


CODECS = ("bf16", "fp16", "int8", "int4", "int2", "mikv")


def family(policy):
    """The policy's family: its sharing stage, else its main reducer, else its codec."""
    stages = policy.split("/")
    names = [s.split("(")[0] for s in stages]
    if names[-1] in ("minicache", "pod"):
        return names[-1]
    if names[0] not in CODECS:  # reducers first
        for r in stages[0].split("+"):
            name = r.split("(")[0]
            if name not in ("sinks", "window"):
                return name
        return "sinks+window"
    return "mikv" if names[0] == "mikv" else "codec only"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/quality.csv"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/quality.png"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    families = sorted({family(r["policy"]) for r in rows})
    models = sorted({r["model"] for r in rows})
    colors = plt.get_cmap("tab10")
    shapes = "osD^v<>"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
    for fi, fam in enumerate(families):
        for mi, model in enumerate(models):
            pts = [r for r in rows if family(r["policy"]) == fam and r["model"] == model]
            if not pts:
                continue
            x = [float(r["bytes_per_token"]) for r in pts]
            label = fam if len(models) == 1 else f"{fam} ({model})"
            kw = dict(color=colors(fi % 10), marker=shapes[mi % len(shapes)], linestyle="none", label=label)
            ax1.plot(x, [float(r["ppl_delta_pct"]) for r in pts], **kw)
            ax2.plot(x, [max(1.0 - float(r["top1_agreement"]), 1e-5) for r in pts], **kw)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("bytes per token (serialized span, headers included)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("symlog", linthresh=0.1)
    ax1.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax1.set_ylabel("perplexity change vs dense (%)")
    ax1.set_title("perplexity change (target <= 1%)")
    ax2.set_yscale("log")
    ax2.axhline(0.01, color="gray", linestyle="--", linewidth=1)
    ax2.set_ylabel("1 - top-1 agreement (floored at 1e-5)")
    ax2.set_title("top-1 disagreement (target <= 1%)")
    ax2.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
