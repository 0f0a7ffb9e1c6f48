#!/usr/bin/python3
"""PyTorch eager's side of bench/gpu_model_bench.cc (issue 13): the same Llama shapes
(bench/gpu_model_shapes.json) with random bf16 weights, the same measurements.

The model is what a careful eager implementation does: bf16 weights and activations, q/k/v and
gate/up fused into one matrix each (as kvspan's), RMSNorm in fp32 (Hugging Face's
LlamaRMSNorm), rotate-half RoPE with llama3 frequency scaling, GQA through
torch.nn.functional.scaled_dot_product_attention(enable_gqa=True), SiLU MLP, and a
preallocated bf16 KV cache per layer, [batch, kv_heads, capacity, head_dim], written in place.

Measured as gpu_model_bench measures (host clock; each timing ends with the logits copied to
the host in fp32, which synchronizes):
- TTFT: one forward over a --prompt-tokens prompt at batch 1 into an empty cache, the last
  token's logits on the host; the median of --ttft-reps after one warm-up.
- Decode: --batches sequences prefilled with their own prompts (untimed), --warmup steps, then
  --steps timed steps of one token per sequence, each step's [batch, vocab] logits on the host;
  tokens/s = batch * steps / time. Tokens are fixed pseudo-random ids (no sampling).

  python3 tools/gpu_torch_peer.py [--shapes 1b,8b] [--batches 1,32] [--prompt-tokens 512]
      [--steps 64] [--warmup 4] [--ttft-reps 5] [--device cuda] [--out FILE.md]
      [--kvspan-table FILE.md]
  /usr/bin/python3 tools/gpu_torch_peer.py --device cpu --tiny    # rehearsal on a CPU

Writes one Markdown table into --out's section gpu_torch_peer (the marker format of
bench/doc_section.h) and prints it; with --kvspan-table (a file holding gpu_model_bench's
table) it adds kvspan's dense-cache speed-ups over these numbers. Runs on torch 1.13 (the CPU
rehearsal here: without scaled_dot_product_attention it attends with the same math written
out, and says so in the table) and 2.x.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTION = "gpu_torch_peer"


def rope_inv_freq(cfg):
    """Rotate-half RoPE frequencies in fp32, llama3 scaling as transformers applies it."""
    dim = cfg["head_dim"]
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen <= old / low) & (wavelen >= old / high)
        inv = torch.where(is_mid, mid, scaled)
    return inv.float()


def has_sdpa():
    return hasattr(F, "scaled_dot_product_attention")


# How attend() runs attention: "gqa" (SDPA with enable_gqa, torch >= 2.5), "repeat" (SDPA over
# key/value heads repeated, torch 2.0 - 2.4), "math" (no SDPA: torch 1.x). Set at the first call.
ATTENTION_PATH = {"path": "gqa" if has_sdpa() else "math"}
ATTENTION_NAMES = {
    "gqa": "scaled_dot_product_attention(enable_gqa=True)",
    "repeat": "scaled_dot_product_attention over repeated KV heads (this torch has no enable_gqa)",
    "math": "softmax attention written out (this torch has no scaled_dot_product_attention)",
}


class EagerLlama:
    """A Llama decoder with random weights and a preallocated KV cache (bf16 on `device`)."""

    def __init__(self, cfg, device, dtype, seed=1):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        h, hd = cfg["hidden_size"], cfg["head_dim"]
        self.nh, self.nkv, self.hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], hd
        inter, vocab = cfg["intermediate_size"], cfg["vocab_size"]

        def matrix(rows, cols):  # uniform in +-1/sqrt(cols), as GpuModel::CreateRandom's bound
            bound = 1.0 / math.sqrt(cols)
            return torch.empty(rows, cols, dtype=dtype, device=device).uniform_(-bound, bound, generator=gen)

        self.embed = matrix(vocab, h)
        self.layers = []
        for _ in range(cfg["num_hidden_layers"]):
            self.layers.append({
                "attn_norm": torch.ones(h, dtype=dtype, device=device),
                "qkv": matrix((self.nh + 2 * self.nkv) * hd, h),
                "o": matrix(h, self.nh * hd),
                "mlp_norm": torch.ones(h, dtype=dtype, device=device),
                "gate_up": matrix(2 * inter, h),
                "down": matrix(h, inter),
            })
        self.final_norm = torch.ones(h, dtype=dtype, device=device)
        self.lm_head = self.embed if cfg.get("tie_word_embeddings", False) else matrix(vocab, h)
        self.inv_freq = rope_inv_freq(cfg).to(device)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.inter = inter

    def weight_bytes(self):
        mats = [self.embed] + [m for l in self.layers for m in (l["qkv"], l["o"], l["gate_up"], l["down"])]
        if self.lm_head is not self.embed:
            mats.append(self.lm_head)
        return sum(m.numel() * m.element_size() for m in mats)

    def new_cache(self, batch, capacity):
        shape = (batch, self.nkv, capacity, self.hd)
        return [(torch.empty(shape, dtype=self.dtype, device=self.device),
                 torch.empty(shape, dtype=self.dtype, device=self.device)) for _ in self.layers]

    def rms_norm(self, x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * xf.to(self.dtype)

    def attend(self, q, k, v, causal):
        # q [b, nh, n, hd]; k, v [b, nkv, t, hd]
        if ATTENTION_PATH["path"] == "gqa":
            try:
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            except TypeError:  # torch 2.0 - 2.4
                ATTENTION_PATH["path"] = "repeat"
        group = self.nh // self.nkv
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        if ATTENTION_PATH["path"] == "repeat":
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(self.hd)
        if causal:
            n, t = q.shape[-2], k.shape[-2]
            mask = torch.ones(n, t, dtype=torch.bool, device=q.device).tril(t - n)
            s = s.masked_fill(~mask, float("-inf"))
        return (s.softmax(-1) @ v.float()).to(q.dtype)

    @torch.no_grad()
    def forward(self, ids, cache, start):
        """ids [b, n] at positions start .. start + n - 1 of every sequence; returns the last
        token's logits [b, vocab] (in the model's dtype, on the device)."""
        b, n = ids.shape
        nh, nkv, hd = self.nh, self.nkv, self.hd
        x = F.embedding(ids, self.embed)
        pos = torch.arange(start, start + n, device=self.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        cos = torch.cat((freqs, freqs), -1).cos().to(self.dtype)
        sin = torch.cat((freqs, freqs), -1).sin().to(self.dtype)

        def rope(t):  # t [b, heads, n, hd]
            half = hd // 2
            rotated = torch.cat((-t[..., half:], t[..., :half]), -1)
            return t * cos + rotated * sin

        for layer, (kc, vc) in zip(self.layers, cache):
            qkv = F.linear(self.rms_norm(x, layer["attn_norm"]), layer["qkv"])
            q, k, v = qkv.split((nh * hd, nkv * hd, nkv * hd), -1)
            q = rope(q.view(b, n, nh, hd).transpose(1, 2))
            k = rope(k.view(b, n, nkv, hd).transpose(1, 2))
            kc[:, :, start:start + n] = k
            vc[:, :, start:start + n] = v.view(b, n, nkv, hd).transpose(1, 2)
            o = self.attend(q, kc[:, :, :start + n], vc[:, :, :start + n], causal=n > 1)
            x = x + F.linear(o.transpose(1, 2).reshape(b, n, nh * hd), layer["o"])
            gate, up = F.linear(self.rms_norm(x, layer["mlp_norm"]), layer["gate_up"]).split(self.inter, -1)
            x = x + F.linear(F.silu(gate) * up, layer["down"])
        return F.linear(self.rms_norm(x[:, -1], self.final_norm), self.lm_head)


def tokens(rng, vocab, shape, device):
    return torch.randint(vocab, shape, generator=rng).to(device)


def to_host(logits):
    out = logits.float().cpu()
    if not torch.isfinite(out).all():
        raise RuntimeError("a logit is not finite")
    return out


def measure_ttft_ms(model, args, rng):
    prompt = tokens(rng, model.cfg["vocab_size"], (1, args.prompt_tokens), model.device)
    cache = model.new_cache(1, args.prompt_tokens)
    ms = []
    for rep in range(1 + args.ttft_reps):
        t0 = time.perf_counter()
        to_host(model.forward(prompt, cache, 0))
        if rep > 0:
            ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def measure_decode(model, args, batch, rng):
    vocab = model.cfg["vocab_size"]
    cache = model.new_cache(batch, args.prompt_tokens + args.warmup + args.steps)
    for b in range(batch):  # each sequence its own prompt, one at a time (as gpu_model_bench)
        one = [(k[b:b + 1], v[b:b + 1]) for k, v in cache]
        to_host(model.forward(tokens(rng, vocab, (1, args.prompt_tokens), model.device), one, 0))
    steps = tokens(rng, vocab, (args.warmup + args.steps, batch, 1), model.device)
    t0 = time.perf_counter()
    for s in range(args.warmup + args.steps):
        if s == args.warmup:
            t0 = time.perf_counter()
        to_host(model.forward(steps[s], cache, args.prompt_tokens + s))
    seconds = time.perf_counter() - t0
    return batch * args.steps / seconds, seconds * 1e3 / args.steps


def write_doc_section(path, name, body):
    """bench/doc_section.h's WriteDocSection: replaces or appends the marked section."""
    begin, end = f"<!-- BEGIN {name} -->\n", f"<!-- END {name} -->\n"
    section = begin + body + ("" if body.endswith("\n") else "\n") + end
    text = open(path).read() if os.path.exists(path) else ""
    b = text.find(begin)
    e = text.find(end, b) if b >= 0 else -1
    if b >= 0 and e >= 0:
        text = text[:b] + section + text[e + len(end):]
    else:
        if text and not text.endswith("\n"):
            text += "\n"
        text += ("\n" if text else "") + section
    with open(path, "w") as f:
        f.write(text)


def kvspan_dense_rows(path):
    """{shape: {"ttft": ms, "b=N": tok/s}} from gpu_model_bench's table (its dense rows)."""
    rows, header = {}, None
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| shape |"):
            header = cells
        elif header and line.startswith("|") and len(cells) == len(header) and cells[1] == "dense":
            row = {"ttft": float(cells[header.index("TTFT (ms)")])}
            for i, h in enumerate(header):
                m = re.match(r"decode tok/s (b=\d+)", h)
                if m:
                    row[m.group(1)] = float(cells[i])
            rows[cells[0]] = row
    return rows


def commit():
    if os.environ.get("KVSPAN_COMMIT"):
        return os.environ["KVSPAN_COMMIT"]
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="1b,8b")
    p.add_argument("--shapes-file", default=os.path.join(ROOT, "bench", "gpu_model_shapes.json"))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--ttft-reps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--tiny", action="store_true",
                   help="rehearsal: the tiny shape, a short prompt, few steps, batches 1,4")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--out", default="", help="Markdown file whose gpu_torch_peer section is rewritten")
    p.add_argument("--kvspan-table", default="", help="gpu_model_bench's table, for the speed-ups")
    args = p.parse_args()
    if args.tiny:
        args.shapes, args.batches, args.prompt_tokens = "tiny", "1,4", 64
        args.steps, args.warmup, args.ttft_reps = 4, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    batches = [int(b) for b in args.batches.split(",")]
    shapes = json.load(open(args.shapes_file))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = []
    for shape in args.shapes.split(","):
        cfg = shapes[shape]
        cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        t0 = time.perf_counter()
        model = EagerLlama(cfg, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        print(f"{shape}: {model.weight_bytes() / 1e9:.2f} GB of random weights in {time.perf_counter() - t0:.2f} s",
              file=sys.stderr, flush=True)
        rng = torch.Generator()
        rng.manual_seed(2)
        row = {"shape": shape, "weights": model.weight_bytes() / 1e9, "ttft": measure_ttft_ms(model, args, rng)}
        print(f"  TTFT({args.prompt_tokens}) {row['ttft']:.2f} ms", file=sys.stderr, flush=True)
        for b in batches:
            row[f"b={b}"] = measure_decode(model, args, b, rng)
            print(f"  batch {b}: {row[f'b={b}'][0]:.1f} tok/s, {row[f'b={b}'][1]:.2f} ms/step", file=sys.stderr,
                  flush=True)
        rows.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    cmd = " ".join(sys.argv)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    attention = ATTENTION_NAMES[ATTENTION_PATH["path"]]
    table = (f"Measured {now} on {device_name}, torch {torch.__version__}, commit {commit()}, "
             f"by `python3 {cmd}` (tools/gpu_torch_peer.py). PyTorch eager, {args.dtype} weights, activations "
             f"and KV cache (preallocated), attention {attention}; random weights (seed 1). TTFT: one "
             f"{args.prompt_tokens}-token prompt at batch 1, its last token's logits on the host (median of "
             f"{args.ttft_reps}). Decode: {args.steps} timed steps after {args.warmup} warm-up steps, every "
             f"sequence with its own {args.prompt_tokens}-token prompt, each step's logits copied to the host.\n\n")
    table += "| shape | KV cache | weights (GB) | TTFT (ms) |" + "".join(f" decode tok/s b={b} | ms/step b={b} |"
                                                                     for b in batches) + "\n"
    table += "|---|---|---:|---:|" + "---:|---:|" * len(batches) + "\n"
    for r in rows:
        table += f"| {r['shape']} | dense {args.dtype} | {r['weights']:.2f} | {r['ttft']:.1f} |"
        table += "".join(f" {r[f'b={b}'][0]:.1f} | {r[f'b={b}'][1]:.2f} |" for b in batches) + "\n"
    if args.kvspan_table and os.path.exists(args.kvspan_table):
        kv = kvspan_dense_rows(args.kvspan_table)
        table += ("\nkvspan's dense cache over PyTorch eager (issue 13's targets: >= 2x decode tok/s at batch 1, "
                  ">= 1.5x at batch 32), from " + os.path.basename(args.kvspan_table) + ":\n\n")
        table += "| shape | TTFT speed-up |" + "".join(f" decode b={b} speed-up |" for b in batches) + "\n"
        table += "|---|---:|" + "---:|" * len(batches) + "\n"
        for r in rows:
            k = kv.get(r["shape"])
            if not k:
                continue
            table += f"| {r['shape']} | {r['ttft'] / k['ttft']:.2f}x |"
            table += "".join(f" {k[f'b={b}'] / r[f'b={b}'][0]:.2f}x |" if f"b={b}" in k else " - |" for b in batches)
            table += "\n"
    print(table, end="")
    if args.out:
        write_doc_section(args.out, SECTION, table)


if __name__ == "__main__":
    main()
