#!/usr/bin/python3
"""Synthetic long-range tasks for the kvspan retrieval model (issue 5), as plain text the
byte-level BPE tokenizer handles, plus the mixer that feeds them to tools/train.py.

Tasks (every key, value and code is random; within one context all keys/codes are unique):

  kv          key-value recall. Context = lines `key 4821: 7734\\n` (about 11 tokens each: the
              tokenizer splits digit runs into one token per digit, ` 4` carrying the space), as
              many as fit the token budget. Question `query 4821:`, answer ` 7734`.
  needle      needle in a haystack. Brown sentences (one per line) as filler, with the needle line
              `The secret code is 58214.` inserted at a sentence boundary at depth fraction d of
              the filler (0 = first line, 1 = last line). Question
              `What is the secret code? The secret code is`, answer ` 58214`.
  multiquery  the SCBench multi-request pattern: ONE shared context, several questions about it.
              Two variants: `kv` (kv lines, several `query` lines) and `needles` (several named
              needles `The secret code of the red door is 58214.` in Brown filler, questions
              `What is the secret code of the red door? The secret code of the red door is`).

The full text of an instance is exactly  context + question + answer  (context ends with "\\n";
the answer starts with a space). A prompt is [<|bos|>] + encode(context + question).

Held-out set (deterministic from --seed; filler from the VALIDATION split):
  /usr/bin/python3 tools/tasks.py --heldout --seed 7 --n 100 --context-tokens 2048 --out FILE
writes JSONL rows {"task","depth","context","question","answer","seed", ...}: --n instances of
kv, --n of needle (depths cycle through DEPTHS), and --n multiquery questions (groups of
--questions questions sharing one context; rows of a group carry the same "group" and context
and their own "qindex"). "depth" is the position of the answer in the context as a fraction
(the needle's depth; for kv the queried line's index / (lines - 1)). Every row satisfies
1 + len(encode(context + question)) + len(encode(answer)) <= --context-tokens.

Training documents (filler from the TRAINING split) come from mixed_sequences(): a stream of
fixed-length token windows, a share `task_mix` of them synthetic tasks, the rest Brown text.
Training task documents are built by concatenating per-piece token ids (each piece ends at a
pre-tokenizer boundary, so this equals encoding the text in all but rare corner cases), which
is fast enough for a GPU run; held-out instances are stored as text and re-encoded by the
evaluator.

Self-test: /usr/bin/python3 tools/tasks.py --selftest
"""
import argparse
import json
import os
import sys

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
from bpe import Tokenizer, read_text  # noqa: E402

DEPTHS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
ADJS = ["red", "blue", "green", "black", "white", "old", "new", "small", "large", "silver",
        "golden", "wooden", "hidden", "north", "south", "east", "west", "first", "second", "last"]
NOUNS = ["door", "box", "house", "river", "road", "garden", "tower", "bridge", "church", "office",
         "school", "ship", "train", "car", "room", "letter", "book", "table", "window", "gate"]
NEEDLE_Q = "What is the secret code? The secret code is"
COPY_MAX_TOKENS = 48  # longest random sequence of a copy block (TaskGen.copy_sequence)


class TaskGen:
    """Builds task instances from one corpus split. Every method takes an explicit
    numpy Generator, so instances are a pure function of (split, tokenizer, rng state)."""

    def __init__(self, tok, corpus_text, kv_format="digits"):
        """kv_format: "digits" (random 4-digit keys, `key 4821: 7734`, question `query 4821:`),
        "words" (keys are the vocabulary's single-token lowercase words of 4-9 letters,
        `key river: 7734`: one key token to match instead of four digit tokens) or "words-bare"
        (`key river 7734`, question `query river`: the value follows the key token directly,
        so the lookup is one induction step, as in the needle)."""
        self.tok = tok
        self.kv_format = kv_format
        self.kv_sep = "" if kv_format == "words-bare" else ":"
        self.key_words = None
        if kv_format in ("words", "words-bare"):
            import re
            words = [tok.decode([i]) for i in range(259, tok.vocab_size)]
            self.key_words = sorted(w[1:] for w in words if re.fullmatch(r" [a-z]{4,9}", w)
                                    and tok.encode(w + ":") == tok.encode(w) + tok.encode(":"))
        elif kv_format != "digits":
            raise ValueError(f"kv_format: {kv_format}")
        self.lines = [ln for ln in corpus_text.split("\n") if ln.strip()]
        self._line_ids = {}
        self._piece = {}
        self._num = {}
        self._key, self._colon, self._nl = self.piece("key"), self.piece(":"), self.piece("\n")

    def warm(self):
        """Encodes every corpus line now (a few seconds for the training split) instead of lazily."""
        for i in range(len(self.lines)):
            self.line(i)

    # ---- token helpers -------------------------------------------------------------------
    def piece(self, text):
        """ids of a text piece that starts and ends at pre-tokenizer boundaries (cached)."""
        ids = self._piece.get(text)
        if ids is None:
            ids = self.tok.encode(text)
            if len(self._piece) < 200_000:
                self._piece[text] = ids
        return ids

    def line(self, i):
        ids = self._line_ids.get(i)
        if ids is None:
            ids = self.tok.encode(self.lines[i] + "\n")
            self._line_ids[i] = ids
        return ids

    # ---- kv ------------------------------------------------------------------------------
    def kv_line(self, k, v):
        return f"key {k}{self.kv_sep} {v}\n"

    def kv_question(self, k):
        return f"query {k}{self.kv_sep}"

    def num(self, n):
        ids = self._num.get(n)
        if ids is None:
            ids = self._num[n] = self.piece(f" {n}")
        return ids

    def kv_ids(self, k, v):
        return self._key + self.num(k) + (self._colon if self.kv_sep else []) + self.num(v) + self._nl

    def kv_context(self, rng, budget):
        """Unique random 4-digit keys with random 4-digit values, lines added while they fit
        `budget` tokens (a line is 9 to 11 tokens: some digit groups are BPE merges).
        Returns (pairs, ids)."""
        if self.key_words is not None:
            keys = [self.key_words[i] for i in rng.permutation(len(self.key_words))]
        else:
            keys = [int(k) for k in rng.permutation(np.arange(1000, 10000))]
        vals = rng.integers(1000, 10000, size=len(keys))
        pairs, ids = [], []
        for k, v in zip(keys, vals):
            li = self.kv_ids(k, int(v))
            if len(ids) + len(li) > budget and len(pairs) >= 2:
                break
            pairs.append((k, int(v)))
            ids += li
        return pairs, ids

    # ---- needle ---------------------------------------------------------------------------
    def filler(self, rng, budget):
        """Consecutive non-empty corpus lines from a random start, at most `budget` tokens.
        Returns list of line indices."""
        start = int(rng.integers(0, len(self.lines)))
        out, used, i = [], 0, start
        while True:
            n = len(self.line(i % len(self.lines)))
            if used + n > budget:
                break
            out.append(i % len(self.lines))
            used += n
            i += 1
            if i - start > len(self.lines):
                break
        return out

    @staticmethod
    def insert_points(filler_lens, depths):
        """Line index at which to insert for each depth fraction of the filler tokens."""
        total = sum(filler_lens)
        cum = np.concatenate([[0], np.cumsum(filler_lens)])
        return [int(np.argmin(np.abs(cum - d * total))) for d in depths]

    def haystack(self, rng, budget, needles, depths, text=True):
        """needles: list of needle-line texts (ending in "\\n"); depths: their depth fractions.
        Returns (context_text, context_ids)."""
        nid = [self.piece(t) for t in needles]
        lines = self.filler(rng, budget - sum(len(x) for x in nid))
        lens = [len(self.line(i)) for i in lines]
        pts = self.insert_points(lens, depths)
        texts, ids = [], []
        for j in range(len(lines) + 1):
            for k, p in enumerate(pts):
                if p == j:
                    if text:
                        texts.append(needles[k])
                    ids += nid[k]
            if j < len(lines):
                if text:
                    texts.append(self.lines[lines[j]] + "\n")
                ids += self.line(lines[j])
        return "".join(texts), ids

    # ---- instances (text) -----------------------------------------------------------------
    def _reserve(self, questions, answers):
        return 1 + sum(len(self.piece(q)) + len(self.piece(a)) for q, a in zip(questions, answers)) + 4

    def kv_instances(self, rng, total_tokens, n_questions=1, text=True):
        """One shared kv context and n_questions (question, answer, depth) about distinct keys."""
        q_budget = n_questions * 12  # question <= 7 tokens, answer <= 4, separator 1
        pairs, ids = self.kv_context(rng, total_tokens - 1 - q_budget - 4)
        idx = rng.choice(len(pairs), size=min(n_questions, len(pairs)), replace=False)
        ctx = "".join(self.kv_line(k, v) for k, v in pairs) if text else None
        qs = [(self.kv_question(pairs[i][0]), f" {pairs[i][1]}", i / max(1, len(pairs) - 1)) for i in idx]
        return ctx, ids, qs

    def needle_instance(self, rng, total_tokens, depth, text=True):
        code = int(rng.integers(10000, 100000))
        needle = f"The secret code is {code}.\n"
        ans = f" {code}"
        budget = total_tokens - self._reserve([NEEDLE_Q], [ans])
        ctx, ids = self.haystack(rng, budget, [needle], [depth], text)
        return ctx, ids, [(NEEDLE_Q, ans, depth)]

    def multi_needle_instance(self, rng, total_tokens, n_needles, n_questions=None, text=True):
        n_questions = n_needles if n_questions is None else n_questions
        names = rng.choice(len(ADJS) * len(NOUNS), size=n_needles, replace=False)
        names = [f"{ADJS[i // len(NOUNS)]} {NOUNS[i % len(NOUNS)]}" for i in names]
        codes = rng.choice(np.arange(10000, 100000), size=n_needles, replace=False)
        depths = [float(d) for d in rng.random(n_needles)]
        needles = [f"The secret code of the {nm} is {c}.\n" for nm, c in zip(names, codes)]
        qa = [(f"What is the secret code of the {nm}? The secret code of the {nm} is", f" {c}", d)
              for nm, c, d in zip(names, codes, depths)]
        qsel = rng.choice(n_needles, size=n_questions, replace=False)
        qa = [qa[i] for i in qsel]
        budget = total_tokens - self._reserve([q for q, _, _ in qa], [a for _, a, _ in qa]) - n_questions
        ctx, ids = self.haystack(rng, budget, needles, depths, text)
        return ctx, ids, qa

    # ---- training sequences ---------------------------------------------------------------
    def copy_pool(self, vocab=None):
        """Token ids a copy document draws from. vocab None: the single-token key words (as
        ` word`) and the digit tokens `0`-`9` and ` 0`-` 9` (each digit 8 times). vocab N: a
        small task vocabulary, the first N key words of a fixed permutation (seed 0) and the 20
        digit tokens once each (early induction stages: fewer distinct tokens to copy)."""
        pools = self.__dict__.setdefault("_copy_pools", {})
        if vocab not in pools:
            words = self.key_words or []
            digits = [self.piece(str(d))[0] for d in range(10)] + [self.piece(f" {d}")[0] for d in range(10)]
            if vocab is None:
                pool = [self.piece(f" {w}")[0] for w in words] + digits * 8
            else:
                perm = np.random.default_rng(0).permutation(len(words))[:vocab]
                pool = [self.piece(f" {words[i]}")[0] for i in perm] + digits
            pools[vocab] = np.array(pool, dtype=np.int64)
        return pools[vocab]

    def copy_sequence(self, rng, length, vocab=None):
        """A training-only document that teaches induction (copying what followed the earlier
        occurrence of the current token), densely: blocks of `copy:` + n random tokens (key
        words and digits) + `\nagain:` + the same tokens from a random start s, until the
        document is full. Loss on the repetition except its first token (each of those is
        predictable only by finding the current token earlier and copying its successor). n
        and s are random per block, so the distance to the earlier copy varies: with one fixed
        n per length the model learned a fixed-offset (positional) head instead, which copied
        99% of those documents and did nothing for kv. The retrieval tasks alone give ~5-40
        answer tokens a document, too few to form induction heads in the pilots. Blocks are at
        most COPY_MAX_TOKENS long: with blocks up to a third of a 1024-token document the copy
        accuracy stayed at 0 for 12 minutes (measured); many short blocks give many more
        look-ups a document at distances the heads find first. vocab: see copy_pool."""
        head, mid = self.piece("copy:"), self.piece("\nagain:")
        pool = self.copy_pool(vocab)
        ids, is_ans = [self.tok.bos_id], [False]
        room = length - 2 - len(ids)
        while True:
            n_max = min((room - len(head) - len(mid) - len(self._nl)) // 2, COPY_MAX_TOKENS)
            if n_max < 4:
                break
            n = int(rng.integers(4, n_max + 1))
            st = int(rng.integers(0, n // 2 + 1))
            seq = [int(t) for t in pool[rng.integers(0, len(pool), size=n)]]
            rep = seq[st:]
            ids += head + seq + mid + rep + self._nl
            is_ans += [False] * (len(head) + n + len(mid) + 1) + [True] * (len(rep) - 1) + [False]
            room -= len(head) + n + len(mid) + len(rep) + len(self._nl)
        return ids, is_ans

    def training_sequence(self, rng, length, answer_only=False, probs=(0.45, 0.35, 0.2), kv_max_queries=8,
                          copy_vocab=None):
        """One task document as exactly `length` token ids (bos + context + questions/answers
        + eos, right-padded with pad) and a loss mask over the `length - 1` next-token targets:
        padding is always masked out; with answer_only, everything except answer tokens (and
        the eos) is masked out too. `probs`: shares of kv, needle and multi_needle documents,
        and optionally a 4th share of copy documents (copy_sequence); a kv document asks
        1..kv_max_queries questions (at most one per 48 tokens); copy_vocab: copy_pool's vocab."""
        kinds = ["kv", "needle", "multi_needle", "copy"][:len(probs)]
        kind = rng.choice(kinds, p=list(probs))
        if kind == "copy":
            ids, is_ans = self.copy_sequence(rng, length, copy_vocab)
        elif kind == "kv":
            nq = min(int(rng.integers(1, kv_max_queries + 1)), max(1, length // (64 if kv_max_queries <= 8 else 48)))
            _, ctx_ids, qa = self.kv_instances(rng, length, nq, text=False)
        elif kind == "needle":
            _, ctx_ids, qa = self.needle_instance(rng, length, float(rng.random()), text=False)
        else:
            nn_ = min(int(rng.integers(2, 7)), max(1, length // 128))  # needles+questions ~45 tokens each
            _, ctx_ids, qa = self.multi_needle_instance(rng, length, nn_, text=False)
        if kind != "copy":
            ids = [self.tok.bos_id] + ctx_ids
            is_ans = [False] * len(ids)
            for j, (q, a, _) in enumerate(qa):
                if j > 0:
                    ids += self.piece("\n")
                    is_ans += [False]
                qi, ai = self.piece(q), self.piece(a)
                ids += qi + ai
                is_ans += [False] * len(qi) + [True] * len(ai)
        ids.append(self.tok.eos_id)
        is_ans.append(True)
        assert len(ids) <= length, (kind, len(ids), length)
        n = len(ids)
        ids = np.array(ids + [self.tok.pad_id] * (length - n), dtype=np.int64)
        tgt_ok = np.zeros(length - 1, dtype=bool)
        tgt_ok[: n - 1] = np.array(is_ans[1:n]) if answer_only else True
        return ids, tgt_ok


def sample_sequence(gen, text_ids, seq_len, task_mix, rng, answer_only=False, **task_kw):
    """One training item (ids [seq_len+1] int64, target mask [seq_len] bool): with probability
    task_mix a synthetic task document (gen.training_sequence(..., **task_kw)), else a random
    window of the tokenized text corpus `text_ids` (all targets on)."""
    if rng.random() < task_mix:
        return gen.training_sequence(rng, seq_len + 1, answer_only, **task_kw)
    s = int(rng.integers(0, len(text_ids) - seq_len - 1))
    return text_ids[s:s + seq_len + 1].astype(np.int64), np.ones(seq_len, dtype=bool)


def mixed_sequences(gen, text_ids, seq_len, task_mix, rng, answer_only=False):
    """Infinite stream of sample_sequence() items: text and tasks mixed by the ratio task_mix.
    (tools/train.py calls sample_sequence directly, because its sequence length changes during
    training and its rng state is checkpointed.)"""
    while True:
        yield sample_sequence(gen, text_ids, seq_len, task_mix, rng, answer_only)


def heldout_rows(gen, seed, n, context_tokens, questions=4, multiquery=True):
    """Deterministic held-out rows (see module doc). One rng per row, seeded from (seed, task,
    index), so rows do not depend on each other or on --n. multiquery=False leaves out the
    multiquery rows (they need a context of about 256 tokens or more)."""
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, 0, i])
        ctx, _, qa = gen.kv_instances(rng, context_tokens, 1)
        q, a, d = qa[0]
        rows.append({"task": "kv", "depth": round(d, 4), "context": ctx, "question": q, "answer": a,
                     "seed": [seed, 0, i]})
    for i in range(n):
        rng = np.random.default_rng([seed, 1, i])
        d = DEPTHS[i % len(DEPTHS)]
        ctx, _, qa = gen.needle_instance(rng, context_tokens, d)
        q, a, _ = qa[0]
        rows.append({"task": "needle", "depth": d, "context": ctx, "question": q, "answer": a,
                     "seed": [seed, 1, i]})
    groups = (n + questions - 1) // questions if multiquery else 0
    for g in range(groups):
        rng = np.random.default_rng([seed, 2, g])
        if g % 2 == 0:
            variant = "kv"
            ctx, _, qa = gen.kv_instances(rng, context_tokens, questions)
        else:
            variant = "needles"
            ctx, _, qa = gen.multi_needle_instance(rng, context_tokens, questions + 2, questions)
        for j, (q, a, d) in enumerate(qa):
            if g * questions + j >= n:
                break
            rows.append({"task": "multiquery", "depth": round(d, 4), "context": ctx, "question": q,
                         "answer": a, "seed": [seed, 2, g], "group": g, "qindex": j, "variant": variant})
    tok = gen.tok
    for r in rows:
        total = 1 + len(tok.encode(r["context"] + r["question"])) + len(tok.encode(r["answer"]))
        assert total <= context_tokens, (r["task"], total, context_tokens)
        r["prompt_tokens"] = total - len(tok.encode(r["answer"]))
    return rows


def default_tokenizer_path():
    return os.path.join(os.path.dirname(TOOLS), "models", "kvspan-brown")


def selftest(tok, train_text, valid_text):
    gen = TaskGen(tok, train_text)
    rng = np.random.default_rng(0)
    # piece concatenation == encoding the text
    ctx, ids, qa = gen.kv_instances(rng, 512, 3)
    assert tok.encode(ctx) == ids, "kv piece ids differ from encode(text)"
    for d in (0.0, 0.5, 1.0):
        ctx, ids, qa = gen.needle_instance(rng, 512, d)
        assert tok.encode(ctx) == ids, "needle piece ids differ from encode(text)"
        lines = ctx.split("\n")
        pos = [i for i, ln in enumerate(lines) if ln.startswith("The secret code is")]
        assert len(pos) == 1
        frac = pos[0] / max(1, len(lines) - 2)
        assert abs(frac - d) < 0.25, (d, frac)
    ctx, ids, qa = gen.multi_needle_instance(rng, 1024, 4)
    assert tok.encode(ctx) == ids
    stream = mixed_sequences(gen, np.arange(10000) % 4000 + 3, 64, 0.5, rng)
    for _ in range(10):
        x, m = next(stream)
        assert x.shape == (65,) and m.shape == (64,)
    for L in (65, 129, 256, 513, 2049):
        for _ in range(20):
            x, m = gen.training_sequence(rng, L)
            assert x.shape == (L,) and m.shape == (L - 1,) and x[0] == tok.bos_id
            x, m = gen.training_sequence(rng, L, answer_only=True)
            assert 0 < m.sum() < 60
    # determinism of the held-out set and the budget
    vg = TaskGen(tok, valid_text)
    r1 = heldout_rows(vg, 3, 6, 1024)
    r2 = heldout_rows(TaskGen(tok, valid_text), 3, 6, 1024)
    assert r1 == r2
    assert {r["task"] for r in r1} == {"kv", "needle", "multiquery"}
    for r in r1:
        assert r["context"].endswith("\n") and r["answer"].startswith(" ")
        assert r["answer"].strip() in r["context"]
    print("tasks.py selftest: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", action="store_true", help="write a held-out JSONL set")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=100, help="instances per task")
    ap.add_argument("--questions", type=int, default=4, help="questions per multiquery context")
    ap.add_argument("--context-tokens", type=int, default=2048)
    ap.add_argument("--tokenizer", default=default_tokenizer_path(),
                    help="model dir or tokenizer.json (the retrieval model's tokenizer is the same "
                         "BPE, trained deterministically on the same split)")
    ap.add_argument("--corpus", default=os.path.join(TOOLS, "corpus", "brown_valid.txt.xz"),
                    help="filler source (default: the validation split)")
    ap.add_argument("--kv-format", default="digits", choices=["digits", "words", "words-bare"],
                    help="kv line format (see TaskGen): `key 4821: 7734`, `key river: 7734` or `key river 7734`")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tok = Tokenizer.load(a.tokenizer)
    if a.selftest:
        selftest(tok, read_text(os.path.join(TOOLS, "corpus", "brown_train.txt.xz")), read_text(a.corpus))
        return
    if not a.heldout or not a.out:
        ap.error("give --heldout --out FILE (or --selftest)")
    rows = heldout_rows(TaskGen(tok, read_text(a.corpus), a.kv_format), a.seed, a.n, a.context_tokens, a.questions)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = {}
    for r in rows:
        counts[r["task"]] = counts.get(r["task"], 0) + 1
    print(f"wrote {len(rows)} rows to {a.out}: {counts}; max prompt tokens "
          f"{max(r['prompt_tokens'] for r in rows)} (budget {a.context_tokens})")


if __name__ == "__main__":
    main()
