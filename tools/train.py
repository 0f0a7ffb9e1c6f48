#!/usr/bin/python3
"""Trains the kvspan-brown Llama model on the Brown corpus, then exports it and writes the
reference outputs and the model README (by running export_hf.py, make_reference.py and
model_readme.py as subprocesses on the final checkpoint).

  /usr/bin/python3 tools/train.py --device cpu --threads 2 --minutes 25 --out models/kvspan-brown

Reproducibility: everything is seeded. With --steps N (and no --minutes) the LR schedule and the
sequence-length switch are functions of the step, so a run is repeatable step for step on the
same machine. With --minutes the schedule is a function of elapsed training time (excluding
evaluation and checkpointing), so the number of steps depends on machine speed.
Schedule: linear warmup, cosine decay to min_lr_frac * lr; sequence length --short-seq for the
first (1 - long_frac) of training, then max_position_embeddings (1024) for the rest, at the same
tokens per step. Checkpoints go to --ckpt-dir (default tools/.ckpt/, not for committing);
resume with --resume tools/.ckpt/last.pt (continues the same schedule and data stream).

Retrieval model on one CPU thread (issue 12; models/kvspan-retrieval, 40 CPU-minutes of training
+ ~5 of evaluation and export; resumable: after an interruption add --resume tools/.ckpt-retrieval/last.pt;
copy models/kvspan-brown/tokenizer*.json into --out first so that the tokenizer is reused):
  nice -n 10 /usr/bin/python3 tools/train.py --preset retrieval-cpu --out models/kvspan-retrieval \
      --ckpt-dir tools/.ckpt-retrieval
The same code on a CUDA GPU: add --device cuda (bf16 autocast; --attn-block is then unused).
--gated-curriculum sets stages (length, copy vocabulary, task mix) entered when a periodic eval
passes --gate (retrieval-cpu: copy accuracy 0.9) or after a cap; --init-prev-token-head starts
layer 0 with a previous-token head (without it no induction head formed in the pilots);
--clock cpu counts CPU time, not wall time (a shared machine); --curriculum is the older
length curriculum by fractions of the budget; --task-probs, --kv-format
(`key river 7734`), --kv-max-queries and --loss-weighting doc (each document weighs the same,
so a task document's few answer tokens are not drowned by a text window's 1024) are the task
knobs; --stop-after-minutes makes a pilot of the same schedule that --resume continues; --post-only
CKPT runs the export/reference/eval/curves on a checkpoint (a run stopped early).

Retrieval model (issue 5; all of this is OFF by default, so the command above is unchanged):
  /usr/bin/python3 tools/train.py --device cuda --preset retrieval-h100 --out models/kvspan-retrieval
--task-mix F makes a share F of the training sequences synthetic long-range tasks (tools/tasks.py:
key-value recall, needle in a haystack, multi-query); --context N sets max_position_embeddings
and the full training sequence length; --preset NAME sets a whole configuration (PRESETS below;
flags given explicitly still win). With --task-mix > 0 the periodic evaluation also reports
teacher-forced exact match on a few held-out kv/needle instances, and the post-processing
writes a held-out set (tools/tasks.py --heldout) to --ckpt-dir and runs tools/eval_tasks.py,
which writes OUT/eval.json.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import time


def _threads_from_argv(argv):
    """--threads as given, else the preset's (retrieval-cpu: 1), else the default 2."""
    for i, x in enumerate(argv):
        if x == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if x.startswith("--threads="):
            return x.split("=", 1)[1]
    return "1" if "retrieval-cpu" in argv or "--preset=retrieval-cpu" in argv else "2"


# Debian's OpenBLAS starts its worker threads when the library loads and torch.set_num_threads
# does not reach them (measured: a --threads 1 run used ~1.5 cores), so cap them before the import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads_from_argv(sys.argv[1:]))
os.environ.setdefault("OMP_NUM_THREADS", os.environ["OPENBLAS_NUM_THREADS"])

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
from bpe import Tokenizer, train_bpe, read_text  # noqa: E402
import model as model_py  # noqa: E402
from model import LlamaConfig, LlamaForCausalLM, num_params  # noqa: E402

REPO = os.path.dirname(TOOLS)


def autocast(enabled):
    """bf16 autocast on CUDA; a no-op context on CPU (torch 1.13 CPU cannot even construct it)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


# --preset values. Flags given on the command line override them.
#
# retrieval-h100: size and budget for ~30 minutes of one H100 (issue 5). THE THROUGHPUT AND MEMORY
# NUMBERS BELOW ARE ESTIMATES, NOT MEASUREMENTS (no GPU was available when this was written; the
# first minutes of the run's log, `tok/s`, replace them).
# - size: the committed model must be <= 30 MB in bf16, i.e. <= ~15M parameters. hidden 384,
#   8 layers, 6 query heads of head_dim 64, 2 KV heads (GQA 3:1), SwiGLU 768, vocab 4096:
#   13.4M parameters (1.6M embeddings + 1.6M lm_head) = ~26.8 MB bf16. Depth 8 rather than
#   fewer, wider layers because recall needs multi-layer (induction-style) circuits.
# - compute: matmul weights ~11.8M -> 6 * 11.8M = ~71 MFLOP/token fwd+bwd, plus causal attention
#   at 2048 tokens ~6 * 2048 * 384 * 8 layers = ~38 MFLOP/token: ~110 MFLOP/token. At 5-15%
#   of the H100's ~990 TFLOP/s dense bf16 (eager PyTorch, small hidden size, flash SDPA) that is
#   ~0.45-1.4M tokens/s; planned for the low end, ~0.3-1M tokens/s: 25 minutes -> ~0.5-1.5G
#   tokens = ~3,500-11,000 steps of 131K tokens (64 x 2048). The Brown training split is ~1.6M
#   tokens, so the text is seen hundreds of times (watch the validation loss for overfitting);
#   task instances are sampled fresh every step and never repeat.
# - memory (estimate): ~25-35 GB of activations at 131K tokens/step, fp32 logits/loss ~6 GB;
#   fits 78 GB. On an out-of-memory error halve --batch-tokens.
# - host side: building the 32 task documents of a step costs ~30 ms of one CPU core (measured
#   on the CPU machine, 0.9 ms per 2048-token document), small next to the estimated step time.
# - 25 minutes of training leaves ~5 of the 30 for start-up (tokenizer 10 s, corpus 5 s, filler
#   lines 4 s), periodic evaluation, the final evaluation, export, reference outputs and
#   eval_tasks.py.
# - schedule: 25% of the time at 512 tokens (cheap steps; task documents shrink with the
#   sequence: a length curriculum), then 75% at 2048; task_mix 0.5 with loss on every token.
PRESETS = {
    # retrieval-cpu: issue 12, one CPU thread (python3-torch 1.13), see the module docstring.
    # 40 CPU-minutes of training (--clock cpu); the stages and why: models/kvspan-retrieval/README.md.
    "retrieval-cpu": dict(
        device="cpu", threads=1, minutes=40.0, clock="cpu", hidden=128, layers=2, heads=4, kv_heads=2,
        intermediate=384, max_pos=1024, batch_tokens=2048, lr=3e-3, warmup_steps=40,
        gated_curriculum="64/v64/m0.9/p0.15+0.05+0+0.8:8,64/m0.85/p0.2+0.1+0.05+0.65:6,128:5,256:5,512:5,1024:0",
        gate="copy:0.9", init_prev_token_head=True, task_mix=0.8,
        task_probs="0.25,0.15,0.1,0.5", kv_format="words-bare", task_loss="answer", loss_weighting="doc",
        kv_max_queries=16, attn_block=128,
        task_eval_n=21, eval_every=60.0, ckpt_every=180.0, heldout_n=70),
    "retrieval-h100": dict(
        device="cuda", minutes=25.0, hidden=384, layers=8, heads=6, kv_heads=2, intermediate=768,
        max_pos=2048, batch_tokens=131072, short_seq=512, long_frac=0.75, lr=2e-3,
        warmup_steps=150, task_mix=0.5, eval_every=120.0, eval_chunks=16, ckpt_every=180.0,
        threads=4),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS),
                    help="a named configuration (see PRESETS in this file); explicit flags override it")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=None, help="number of optimizer steps")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "kvspan-brown"))
    ap.add_argument("--ckpt-dir", default=os.path.join(TOOLS, ".ckpt"))
    ap.add_argument("--resume", default=None)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train-corpus", default=os.path.join(TOOLS, "corpus", "brown_train.txt.xz"))
    ap.add_argument("--valid-corpus", default=os.path.join(TOOLS, "corpus", "brown_valid.txt.xz"))
    # model
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--max-pos", type=int, default=1024)
    ap.add_argument("--context", type=int, dest="max_pos", help="same as --max-pos: max_position_embeddings "
                    "and the full training/validation sequence length")
    # synthetic long-range tasks (tools/tasks.py); 0 = plain text only (the kvspan-brown recipe)
    ap.add_argument("--task-mix", type=float, default=0.0, help="share of training sequences that are synthetic tasks")
    ap.add_argument("--task-loss", default="full", choices=["full", "answer"],
                    help="loss on task sequences: every token (default) or only the answer tokens")
    ap.add_argument("--task-eval-n", type=int, default=8,
                    help="held-out kv and needle instances per periodic task evaluation (when --task-mix > 0)")
    ap.add_argument("--heldout-seed", type=int, default=7, help="seed of the held-out set written at the end")
    ap.add_argument("--heldout-n", type=int, default=100, help="instances per task in the held-out set")
    ap.add_argument("--task-probs", default="0.45,0.35,0.2",
                    help="shares of kv, needle, multi-needle (and optionally copy: tools/tasks.py copy_sequence) "
                         "among the task documents")
    ap.add_argument("--kv-format", default="digits", choices=["digits", "words", "words-bare"],
                    help="kv line format (tools/tasks.py TaskGen): `key 4821: 7734`, `key river: 7734` "
                         "or `key river 7734`")
    ap.add_argument("--kv-max-queries", type=int, default=8, help="questions per kv training document: 1..N")
    ap.add_argument("--loss-weighting", default="token", choices=["token", "doc"],
                    help="token: mean over every kept target of the batch; doc: mean per document, then "
                         "over documents (a task document's few answer tokens weigh as much as a text window)")
    # optimisation
    ap.add_argument("--batch-tokens", type=int, default=4096, help="tokens per optimizer step")
    ap.add_argument("--short-seq", type=int, default=256)
    ap.add_argument("--long-frac", type=float, default=0.5, help="share of training at full context")
    ap.add_argument("--curriculum", default=None,
                    help="length curriculum 'LEN:FRAC,...' (FRACs of the budget, in order; the last LEN "
                         "must equal --context); replaces --short-seq/--long-frac")
    ap.add_argument("--gated-curriculum", default=None, metavar="STAGES",
                    help="stages entered on measured accuracy instead of a fraction of the budget: "
                         "'LEN[/vN][/mMIX][/pKV+NEEDLE+MULTI+COPY]:CAP,...' (CAP: most training minutes in "
                         "the stage; the next stage is entered earlier when a periodic eval passes --gate; "
                         "vN: copy documents from a task vocabulary of N key words + the digits; mMIX/p...: "
                         "that stage's --task-mix/--task-probs). The last LEN must equal --context and its "
                         "CAP is ignored. The stage and its start are in the checkpoint, so --resume keeps them")
    ap.add_argument("--gate", default="copy:0.9",
                    help="with --gated-curriculum: 'METRIC:MIN,...', every one must hold at a periodic eval to "
                         "enter the next stage (metrics: copy = token accuracy on held-out copy documents of "
                         "the stage, kv, kv1 = kv's first answer token, needle, multiquery)")
    ap.add_argument("--copy-eval-n", type=int, default=16, help="held-out copy documents per periodic eval")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="what --minutes, the schedule and the stage caps count: wall time of the training "
                         "steps, or this process's CPU time in them (independent of other load on a shared "
                         "machine; with one thread, one CPU-second is one core-second)")
    ap.add_argument("--stop-after-cpu-minutes", type=float, default=None,
                    help="checkpoint and exit once the run (all its processes, evals included) has used this "
                         "many CPU-minutes (a budget; continue with --resume)")
    ap.add_argument("--init-prev-token-head", action="store_true",
                    help="initialise layer 0's first query head as a previous-token head (init_prev_token_head): "
                         "the first half of an induction circuit, which RoPE without a content-free direction "
                         "in the residual stream makes slow to find; same architecture, only the start differs")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=40)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=float, default=150.0, help="seconds of training between evals")
    ap.add_argument("--eval-chunks", type=int, default=8, help="1024-token validation chunks per periodic eval")
    ap.add_argument("--ckpt-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--stop-at-step", type=int, default=None,
                    help="checkpoint and exit at this step without finishing (for testing --resume)")
    ap.add_argument("--stop-after-minutes", type=float, default=None,
                    help="checkpoint and exit once this many minutes are trained (a pilot of a longer "
                         "schedule; continue it with --resume)")
    ap.add_argument("--attn-block", type=int, default=None,
                    help="blockwise causal attention with query blocks of N (tools/model.py CAUSAL_BLOCK; "
                         "torch 1.13 only, where there is no scaled_dot_product_attention): same result up "
                         "to fp32 rounding, ~2x the training tokens/s at 1024 tokens on one CPU thread")
    ap.add_argument("--no-post", action="store_true", help="skip export/reference/README at the end")
    ap.add_argument("--post-only", default=None, metavar="CKPT",
                    help="only run the post-processing (export, reference, held-out set, eval.json, curves) "
                         "on this checkpoint, e.g. the last.pt of a run stopped early")
    a = ap.parse_args(argv)
    if a.preset:
        ap.set_defaults(**PRESETS[a.preset])
        a = ap.parse_args(argv)
    if a.minutes is None and a.steps is None:
        ap.error("give --minutes and/or --steps")
    a.stages = None
    if a.curriculum and not a.gated_curriculum:  # --gated-curriculum replaces --curriculum
        a.stages = [(int(x.split(":")[0]), float(x.split(":")[1])) for x in a.curriculum.split(",")]
        if a.stages[-1][0] != a.max_pos:
            ap.error("the last --curriculum length must equal --context")
    a.task_probs_t = tuple(float(x) for x in a.task_probs.split(","))
    a.gated = parse_gated(a.gated_curriculum, a) if a.gated_curriculum else None
    if a.gated and a.gated[-1]["len"] != a.max_pos:
        ap.error("the last --gated-curriculum length must equal --context")
    a.gate_t = [(x.split(":")[0], float(x.split(":")[1])) for x in a.gate.split(",") if x]
    return a


def parse_gated(spec, a):
    """'LEN[/vN][/mMIX][/pA+B+C+D]:CAP,...' -> [{len, vocab, mix, probs, cap_s}]."""
    stages = []
    for item in spec.split(","):
        body, cap = item.split(":")
        fields = body.split("/")
        st = {"len": int(fields[0]), "vocab": None, "mix": a.task_mix, "probs": a.task_probs_t,
              "cap_s": float(cap) * 60}
        for f in fields[1:]:
            if f[0] == "v":
                st["vocab"] = int(f[1:])
            elif f[0] == "m":
                st["mix"] = float(f[1:])
            elif f[0] == "p":
                st["probs"] = tuple(float(x) for x in f[1:].split("+"))
            else:
                raise ValueError(f"--gated-curriculum field {f!r}")
        stages.append(st)
    return stages


def seq_len_at(a, p, state=None):
    """Training sequence length at progress p in [0, 1] (with --gated-curriculum: the length of
    the stage state["stage"], which the training loop advances)."""
    if a.gated:
        return a.gated[state["stage"]]["len"]
    if a.stages is None:
        return a.short_seq if p < 1.0 - a.long_frac else a.max_pos
    cum = 0.0
    for T, frac in a.stages:
        cum += frac
        if p < cum:
            return T
    return a.stages[-1][0]


class Logger:
    def __init__(self, path, append):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(path, "a" if append else "w")

    def __call__(self, msg):
        print(msg, flush=True)
        self.f.write(msg + "\n")
        self.f.flush()


def get_tokenizer(a, log):
    path = os.path.join(a.out, "tokenizer.json")
    if os.path.exists(path):
        tok = Tokenizer.load(path)
        log(f"tokenizer: loaded {path} (vocab {tok.vocab_size})")
    else:
        t0 = time.time()
        tok = Tokenizer(train_bpe(read_text(a.train_corpus), a.vocab, log=log))
        tok.save(a.out)
        log(f"tokenizer: trained vocab {tok.vocab_size} in {time.time() - t0:.1f}s -> {path}")
    assert tok.vocab_size == a.vocab
    return tok


def tokenize_corpus(tok, path, cache_dir, log):
    """Documents are separated by blank lines; each becomes [bos] + ids + [eos]."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    h.update(json.dumps(tok.merges).encode())
    cache = os.path.join(cache_dir, f"tokens_{h.hexdigest()[:16]}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    t0 = time.time()
    ids = []
    for doc in read_text(path).split("\n\n"):
        if doc.strip():
            ids.append(tok.bos_id)
            ids.extend(tok.encode(doc))
            ids.append(tok.eos_id)
    arr = np.array(ids, dtype=np.uint16)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(cache, arr)
    log(f"tokenized {os.path.basename(path)}: {len(arr)} tokens in {time.time() - t0:.1f}s")
    return arr


def lr_at(a, step, progress):
    if step < a.warmup_steps:
        return a.lr * (step + 1) / a.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def evaluate(model, chunks, device, amp):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(chunks), 4):
        x = torch.from_numpy(chunks[i:i + 4].astype(np.int64)).to(device)
        with autocast(amp):
            logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        tot += loss.item()
        n += x[:, 1:].numel()
    model.train()
    return tot / n


def task_eval_rows(a, tok, L, gen=None):
    """A small fixed held-out set (kv, needle, multiquery; validation filler) of L-token
    instances for the periodic evaluation."""
    from tasks import TaskGen, heldout_rows
    gen = gen or TaskGen(tok, read_text(a.valid_corpus), a.kv_format)
    return heldout_rows(gen, a.heldout_seed + 1000, a.task_eval_n, L, multiquery=L >= 256)


@torch.no_grad()
def copy_accuracy(model, gen, T, vocab, n, seed, device, amp):
    """Token accuracy (argmax) on the repetitions of n held-out copy documents of T tokens
    (tools/tasks.py copy_sequence, validation-split generator, fixed seed): the share of
    look-ups a content-based induction head gets right."""
    rng = np.random.default_rng([seed, 3, T])
    x = np.full((n, T + 1), gen.tok.pad_id, dtype=np.int64)
    m = np.zeros((n, T), dtype=bool)
    for i in range(n):
        ids, is_ans = gen.copy_sequence(rng, T + 1, vocab)
        x[i, :len(ids)] = ids
        m[i, :len(ids) - 1] = is_ans[1:]
    was_training = model.training
    model.eval()
    x = torch.from_numpy(x).to(device)
    with autocast(amp):
        pred = model(x[:, :-1]).float().argmax(-1)
    if was_training:
        model.train()
    ok = (pred == x[:, 1:]).cpu().numpy()
    return float(ok[m].mean())


@torch.no_grad()
def init_prev_token_head(model, cfg, seed, margin=8.0, n_freq=8, decay=0.7, shared=2.0):
    """Initialisation (not an architectural change) that makes layer 0's query head 0 (on KV
    head 0) attend to the previous token. Llama has no position embedding and no biases, so
    attention by position alone needs a component of q and k that does not depend on the
    token: every embedding gets a shared direction u (`shared` times as large as its random
    part), and q_proj/k_proj of that head get the rank-1 terms q0 u^T / k0 u^T. q0 and k0 put
    amplitude decay^j on the n_freq fastest RoPE frequency pairs j, k0 rotated by +theta_j, so
    the score sum_j decay^j cos((m - n - 1) theta_j) peaks at key n = m - 1 (with 8 pairs and
    0.7: 18% of the peak above any other key up to 1023 back; equal weights on all 16 pairs
    give 4%, which the token-dependent part of x.u swamps); the scale puts `margin` logits
    between the previous token and the next best key at the typical |x.u| after RMSNorm.
    Returns the mean attention on the previous token, measured on random tokens."""
    g = torch.Generator().manual_seed(seed)
    d, hd = cfg.hidden_size, cfg.head_dim
    u = torch.randn(d, generator=g)
    u /= u.norm()
    emb = model.model.embed_tokens.weight
    emb += shared * emb.norm(dim=1).mean() * u
    xu = float(((emb @ u).abs() / emb.pow(2).mean(1).sqrt()).mean())  # |x.u| after RMSNorm
    half = hd // 2
    theta = cfg.rope_theta ** (-torch.arange(0, hd, 2).float() / hd)
    w = torch.zeros(half)
    w[:n_freq] = decay ** torch.arange(n_freq).float()
    q0, k0 = torch.cat([w.sqrt(), torch.zeros(half)]), torch.cat([w.sqrt() * torch.cos(theta), w.sqrt() * torch.sin(theta)])
    dist = torch.arange(cfg.max_position_embeddings).float()
    score = (w[:, None] * torch.cos((dist[None, :] - 1) * theta[:, None])).sum(0)  # per unit, by m - n
    unit_margin = float(score[1] - torch.cat([score[:1], score[2:]]).max())
    alpha = math.sqrt(margin * math.sqrt(hd) / (unit_margin * xu * xu))
    attn = model.model.layers[0].self_attn
    attn.q_proj.weight[:hd] += alpha * q0[:, None] * u[None, :]
    attn.k_proj.weight[:hd] += alpha * k0[:, None] * u[None, :]
    # measure: attention of (layer 0, head 0) on the previous token for random token ids
    x = torch.randint(3, cfg.vocab_size, (2, 256), generator=g)
    h = model.model.layers[0].input_layernorm(model.model.embed_tokens(x))
    pos = torch.arange(256)
    cos, sin = model_py.rope_cos_sin(pos, hd, cfg.rope_theta, "cpu")
    q = model_py.apply_rope(attn.q_proj(h)[..., :hd][:, None], cos, sin)
    k = model_py.apply_rope(attn.k_proj(h)[..., :hd][:, None], cos, sin)
    att = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(pos[None, :] > pos[:, None], float("-inf"))
    p = torch.softmax(att, -1)[:, 0]
    return float(p.diagonal(offset=-1, dim1=1, dim2=2).mean())  # [b, m, m - 1]


def save_ckpt(path, model, opt, state, cfg, a):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                "config": cfg.to_dict(), "args": vars(a)}, tmp)
    os.replace(tmp, path)


def main():
    a = parse_args()
    if a.post_only:
        post(a, a.post_only)
        return
    torch.set_num_threads(a.threads)
    model_py.CAUSAL_BLOCK = a.attn_block
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    device = torch.device(a.device)
    amp = a.device == "cuda"
    os.makedirs(a.ckpt_dir, exist_ok=True)
    log = Logger(os.path.join(a.out, "train_log.txt"), append=a.resume is not None)
    cmd = "/usr/bin/python3 tools/train.py " + " ".join(sys.argv[1:])
    log(f"# command: {cmd}")
    log(f"# torch {torch.__version__}, device {a.device}, threads {a.threads}, seed {a.seed}")

    tok = get_tokenizer(a, log)
    train_ids = tokenize_corpus(tok, a.train_corpus, a.ckpt_dir, log)
    valid_ids = tokenize_corpus(tok, a.valid_corpus, a.ckpt_dir, log)
    L = a.max_pos
    nval = (len(valid_ids) - 1) // L
    val_chunks = np.stack([valid_ids[i * L: i * L + L + 1] for i in range(nval)])
    sel = np.linspace(0, nval - 1, min(a.eval_chunks, nval)).round().astype(int)
    val_small = val_chunks[sel]
    log(f"data: train {len(train_ids)} tokens, valid {len(valid_ids)} tokens "
        f"({nval} chunks of {L}; periodic eval on {len(sel)})")

    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, max_position_embeddings=a.max_pos,
                      bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    model = LlamaForCausalLM(cfg)
    if a.init_prev_token_head and not a.resume:
        log(f"init: layer 0 head 0 as a previous-token head, mean attention on the previous token "
            f"{init_prev_token_head(model, cfg, a.seed):.3f} (random tokens)")
    model = model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    state = {"step": 0, "elapsed": 0.0, "tokens": 0, "history": [], "rng": None, "stage": 0,
             "stage_start": 0.0, "stages": [], "cpu_s": 0.0}
    rng = np.random.default_rng(a.seed)
    task_gen = task_rng = task_rows = None
    if a.task_mix > 0:
        from tasks import TaskGen
        t0 = time.time()
        task_gen = TaskGen(tok, read_text(a.train_corpus), a.kv_format)
        task_gen.warm()  # encode every filler line once, up front (~3-4 s on CPU)
        log(f"tasks: encoded {len(task_gen.lines)} filler lines in {time.time() - t0:.1f}s")
        # a separate stream, so that --task-mix 0 leaves the text recipe's random stream untouched
        task_rng = np.random.default_rng([a.seed, 5])
        from tasks import TaskGen as _TG
        valid_gen = _TG(tok, read_text(a.valid_corpus), a.kv_format)
        task_rows_by_len = {}

        def task_rows_at(T):
            if T not in task_rows_by_len:
                task_rows_by_len[T] = task_eval_rows(a, tok, T, valid_gen)
            return task_rows_by_len[T]
        task_rows = True
        if a.gated:
            log(f"gated curriculum: {a.gated_curriculum}; gate {a.gate}")
        log(f"tasks: task_mix {a.task_mix}, probs kv/needle/multi_needle {a.task_probs}, loss on task "
            f"sequences: {a.task_loss}, loss weighting {a.loss_weighting}; periodic task eval on "
            f"{len(task_rows_at(L))} held-out instances at the current training length")
    if a.resume:
        ck = torch.load(a.resume, map_location="cpu")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if task_rng is not None:
            task_rng.bit_generator.state = state["task_rng"]
        log(f"resumed from {a.resume} at step {state['step']}, {state['elapsed']:.0f}s trained"
            f"{', stage %d' % state['stage'] if a.gated else ''}")
        for k, v in (("cpu_s", 0.0), ("stage", 0), ("stage_start", 0.0), ("stages", [])):
            state.setdefault(k, v)
    cpu_base = state["cpu_s"] - time.process_time()  # CPU seconds of the earlier processes of this run

    def cpu_s():
        return cpu_base + time.process_time()
    log(f"model: {num_params(model)} params, config {json.dumps(cfg.to_dict())}")
    budget = a.minutes * 60 if a.minutes is not None else None

    def progress():
        ps = []
        if budget:
            ps.append(state["elapsed"] / budget)
        if a.steps:
            ps.append(state["step"] / a.steps)
        return max(ps)

    def done():
        return (budget is not None and state["elapsed"] >= budget) or (a.steps is not None and state["step"] >= a.steps)

    def record_eval(T=None):
        vl = evaluate(model, val_small, device, amp)
        state["history"].append({"step": state["step"], "tokens": state["tokens"],
                                 "elapsed": round(state["elapsed"], 1), "train": state.get("train_ema"),
                                 "valid": vl})
        extra = ""
        if task_rows:
            from eval_tasks import exact_match
            T = T or seq_len_at(a, progress(), state)
            rows = task_rows_at(T)
            ok = exact_match(model, tok, rows, device, amp)
            model.train()
            state["history"][-1]["task_len"] = T
            extra += f" at_len {T}"
            h = state["history"][-1]
            for t in ("kv", "needle", "multiquery"):
                v = [o for o, r in zip(ok, rows) if r["task"] == t]
                h[t] = sum(v) / max(1, len(v))
                extra += f" {t}_exact {h[t]:.3f}"
            kv_rows = [r for r in rows if r["task"] == "kv"]
            h["kv1"] = sum(exact_match(model, tok, kv_rows, device, amp, first_tokens=1)) / max(1, len(kv_rows))
            vocab = a.gated[state["stage"]]["vocab"] if a.gated else None
            h["copy"] = copy_accuracy(model, valid_gen, T, vocab, a.copy_eval_n, a.heldout_seed, device, amp)
            extra += f" kv_first_token {h['kv1']:.3f} copy_acc {h['copy']:.3f}"
            if vocab is not None:
                h["copy_full"] = copy_accuracy(model, valid_gen, T, None, a.copy_eval_n, a.heldout_seed, device, amp)
                extra += f" (vocab {vocab}; full vocab {h['copy_full']:.3f})"
            if a.gated:
                h["stage"] = state["stage"]
        state["history"][-1]["cpu_s"] = round(cpu_s(), 1)
        log(f"eval step {state['step']} tokens {state['tokens']} time {state['elapsed']:.0f}s "
            f"cpu {cpu_s():.0f}s valid_loss {vl:.4f} ppl {math.exp(vl):.2f}{extra}")
        if task_rows and a.gated and state["stage"] < len(a.gated) - 1 and all(
                h.get(m, -1.0) >= th for m, th in a.gate_t):
            next_stage(f"gate {a.gate} passed")

    def next_stage(why):
        st = a.gated[state["stage"]]
        state["stages"].append({"stage": state["stage"], "len": st["len"], "vocab": st["vocab"],
                                "start": round(state["stage_start"], 1), "end": round(state["elapsed"], 1),
                                "step": state["step"], "why": why})
        state["stage"] += 1
        state["stage_start"] = state["elapsed"]
        nx = a.gated[state["stage"]]
        log(f"stage {state['stage'] - 1} -> {state['stage']} at step {state['step']} time {state['elapsed']:.0f}s "
            f"({why}): len {nx['len']} vocab {nx['vocab'] or 'full'} mix {nx['mix']} probs {nx['probs']}")

    def save_rng():
        state["rng"] = rng.bit_generator.state
        state["torch_rng"] = torch.get_rng_state()
        state["cpu_s"] = cpu_s()
        if task_rng is not None:
            state["task_rng"] = task_rng.bit_generator.state

    last_eval = state["elapsed"]
    last_ckpt = time.time()
    ckpt_path = os.path.join(a.ckpt_dir, "last.pt")
    if state["step"] == 0:
        record_eval()
    model.train()
    while not done():
        t0, c0 = time.time(), time.process_time()
        p = progress()
        T = seq_len_at(a, p, state)
        st = a.gated[state["stage"]] if a.gated else None
        mix, probs = (st["mix"], st["probs"]) if st else (a.task_mix, a.task_probs_t)
        B = max(1, a.batch_tokens // T)
        lr = lr_at(a, state["step"], p)
        for g in opt.param_groups:
            g["lr"] = lr
        if task_gen is None:
            starts = rng.integers(0, len(train_ids) - T - 1, size=B)
            x = torch.from_numpy(np.stack([train_ids[s:s + T + 1] for s in starts]).astype(np.int64)).to(device)
            y = x[:, 1:]
        else:
            from tasks import sample_sequence
            items = [sample_sequence(task_gen, train_ids, T, mix, task_rng, a.task_loss == "answer",
                                     probs=probs, kv_max_queries=a.kv_max_queries,
                                     copy_vocab=st["vocab"] if st else None)
                     for _ in range(B)]
            x = torch.from_numpy(np.stack([it[0] for it in items])).to(device)
            keep = torch.from_numpy(np.stack([it[1] for it in items])).to(device)
            y = x[:, 1:].masked_fill(~keep, -100)  # padding (and non-answer tokens) ignored
        with autocast(amp):
            logits = model(x[:, :-1])
        if a.loss_weighting == "doc" and task_gen is not None:
            tl = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1),
                                 reduction="none").view(B, T)
            kept = (y != -100).float()
            loss = ((tl * kept).sum(1) / kept.sum(1).clamp(min=1)).mean()
        else:
            loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        if a.device == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        state["step"] += 1
        state["elapsed"] += dt if a.clock == "wall" else time.process_time() - c0
        state["tokens"] += B * T
        if T == L:
            state["long_steps"] = state.get("long_steps", 0) + 1
        li = loss.item()
        state["train_ema"] = li if state.get("train_ema") is None else 0.9 * state["train_ema"] + 0.1 * li
        if state["step"] % 10 == 0 or state["step"] == 1:
            log(f"step {state['step']} seq {T} lr {lr:.2e} loss {li:.4f} ema {state['train_ema']:.4f} "
                f"gnorm {gn:.2f} tok/s {B * T / dt:.0f} time {state['elapsed']:.0f}s cpu {cpu_s():.0f}s")
        if state["elapsed"] - last_eval >= a.eval_every and not done():
            record_eval(T)
            last_eval = state["elapsed"]
        if a.gated and state["stage"] < len(a.gated) - 1 and \
                state["elapsed"] - state["stage_start"] >= a.gated[state["stage"]]["cap_s"]:
            record_eval(T)  # the stage's last measurement, then the next stage
            last_eval = state["elapsed"]
            if state["elapsed"] - state["stage_start"] > 0:  # not already advanced by the gate
                next_stage("time cap")
        if time.time() - last_ckpt >= a.ckpt_every:
            save_rng()
            save_ckpt(ckpt_path, model, opt, state, cfg, a)
            last_ckpt = time.time()
        if (a.stop_at_step is not None and state["step"] >= a.stop_at_step) or (
                a.stop_after_minutes is not None and state["elapsed"] >= a.stop_after_minutes * 60) or (
                a.stop_after_cpu_minutes is not None and cpu_s() >= a.stop_after_cpu_minutes * 60):
            record_eval(T)
            save_rng()
            save_ckpt(ckpt_path, model, opt, state, cfg, a)
            log(f"stopped at step {state['step']} ({state['elapsed']:.0f}s trained, {cpu_s():.0f} CPU-s in all); "
                f"resume with --resume {ckpt_path}")
            return

    record_eval()
    t0 = time.time()
    full_valid = evaluate(model, val_chunks, device, amp)
    state["final"] = {"valid_loss": full_valid, "valid_tokens": int(val_chunks[:, 1:].size),
                      "train_ema": state["train_ema"], "steps": state["step"], "tokens": state["tokens"],
                      "train_seconds": state["elapsed"], "threads": a.threads, "device": a.device,
                      "command": cmd, "params": num_params(model), "torch": torch.__version__,
                      "train_split_tokens": int(len(train_ids)), "valid_split_tokens": int(len(valid_ids))}
    log(f"final: step {state['step']} tokens {state['tokens']} train_time {state['elapsed']:.0f}s "
        f"train_loss(ema) {state['train_ema']:.4f} full_valid_loss {full_valid:.4f} "
        f"ppl {math.exp(full_valid):.2f} (eval {time.time() - t0:.0f}s over {state['final']['valid_tokens']} tokens)")
    save_rng()
    save_ckpt(ckpt_path, model, opt, state, cfg, a)
    final_path = os.path.join(a.ckpt_dir, "final.pt")
    save_ckpt(final_path, model, opt, state, cfg, a)
    log.f.close()
    if a.no_post:
        return
    post(a, final_path)


def post(a, final_path):
    """Export, reference outputs, and (task models) held-out set, eval.json and curves."""
    py = sys.executable
    L = a.max_pos
    # model_readme.py writes the kvspan-brown README; a task model's README is written by hand
    # around the numbers of eval.json and the curves (models/kvspan-retrieval/README.md).
    readme = [] if a.task_mix > 0 else [("model_readme.py", ["--ckpt", final_path, "--out", a.out])]
    for script, extra in [("export_hf.py", ["--ckpt", final_path, "--out", a.out]),
                          ("make_reference.py", ["--model", a.out, "--threads", str(a.threads)])] + readme:
        print(f"running {script}", flush=True)
        subprocess.run([py, os.path.join(TOOLS, script)] + extra, check=True)
    if a.task_mix > 0:
        heldout = os.path.join(a.out, "reference", "tasks_heldout.jsonl")
        brown = os.path.join(REPO, "models", "kvspan-brown")
        for script, extra in (("tasks.py", ["--heldout", "--seed", str(a.heldout_seed), "--n", str(a.heldout_n),
                                            "--context-tokens", str(L), "--tokenizer", a.out, "--kv-format", a.kv_format,
                                            "--out", heldout]),
                              ("eval_tasks.py", ["--model", a.out, "--heldout", heldout, "--device", a.device,
                                                 "--threads", str(a.threads), "--baseline-model", brown]),
                              ("plot_history.py", ["--ckpt", final_path, "--out", a.out])):
            print(f"running {script}", flush=True)
            subprocess.run([py, os.path.join(TOOLS, script)] + extra, check=True)


if __name__ == "__main__":
    main()
