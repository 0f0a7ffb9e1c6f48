#!/usr/bin/python3
"""Byte-level BPE tokenizer with exact GPT-2 semantics (trainer, encoder, decoder, HF export).

Id layout (recorded in tokenizer.json and models/kvspan-brown/README.md):
  0 <|bos|>, 1 <|eos|>, 2 <|pad|>          special (added) tokens
  3 .. 258                                 the 256 byte tokens, byte b -> id 3 + b
  259 .. vocab_size-1                      merges, in rank order (merge r -> id 259 + r)

Pre-tokenization: GPT-2 regex over the text; special tokens are first split out of the text as
whole tokens (like Hugging Face added tokens). Encoding: per pre-token, repeatedly merge the
adjacent pair of lowest merge rank (GPT-2 `bpe`). Training: count pre-tokens once, then merge
on the word-count table with incremental pair counts; ties on count are broken by the
lexicographically smallest (left, right) pair of token strings, so training is deterministic.

CLI:
  bpe.py train CORPUS.txt[.xz] OUT_DIR [--vocab 4096]   -> OUT_DIR/tokenizer.json, tokenizer_config.json
  bpe.py encode TOKENIZER_DIR "text"                       -> prints ids
"""
import argparse
import heapq
import json
import lzma
import os
import sys
from collections import Counter, defaultdict

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]
NUM_SPECIAL = len(SPECIAL_TOKENS)
BYTE_BASE = NUM_SPECIAL  # id of byte 0
MODEL_MAX_LENGTH = 1024


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}
_PAT = regex.compile(GPT2_PATTERN)


def read_text(path):
    if path.endswith(".xz"):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def pretokenize(text):
    """GPT-2 regex split, each piece mapped to its byte-level unicode string."""
    return ["".join(BYTE_ENCODER[b] for b in piece.encode("utf-8")) for piece in _PAT.findall(text)]


def train_bpe(text, vocab_size=4096, log=print):
    num_merges = vocab_size - NUM_SPECIAL - 256
    word_counts = Counter(pretokenize(text))
    words = [list(w) for w in word_counts]
    counts = [word_counts[w] for w in word_counts]
    pair_counts = defaultdict(int)
    pair_words = defaultdict(set)
    for wi, (w, c) in enumerate(zip(words, counts)):
        for a, b in zip(w, w[1:]):
            pair_counts[(a, b)] += c
            pair_words[(a, b)].add(wi)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        negc, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry
        merges.append(pair)
        a, b = pair
        new = a + b
        changed = set()
        for wi in list(pair_words[pair]):
            w = words[wi]
            c = counts[wi]
            # remove old pair contributions of this word
            for x, y in zip(w, w[1:]):
                pair_counts[(x, y)] -= c
                changed.add((x, y))
            out = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out
            for x, y in zip(out, out[1:]):
                pair_counts[(x, y)] += c
                pair_words[(x, y)].add(wi)
                changed.add((x, y))
        del pair_counts[pair]
        del pair_words[pair]
        changed.discard(pair)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
                pair_words.pop(p, None)
        if len(merges) % 500 == 0:
            log(f"bpe: {len(merges)}/{num_merges} merges")
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        self.vocab = {s: i for i, s in enumerate(SPECIAL_TOKENS)}
        for b in range(256):
            self.vocab[BYTE_ENCODER[b]] = BYTE_BASE + b
        for a, b in self.merges:
            self.vocab[a + b] = len(self.vocab)
        self.id_to_token = {i: s for s, i in self.vocab.items()}
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.cache = {}
        self.special_re = regex.compile("(" + "|".join(regex.escape(s) for s in SPECIAL_TOKENS) + ")")
        self.bos_id, self.eos_id, self.pad_id = 0, 1, 2

    @property
    def vocab_size(self):
        return len(self.vocab)

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            a, b = parts[best], parts[best + 1]
            out = []
            i = 0
            while i < len(parts):  # merge every occurrence of (a, b), left to right
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids = [self.vocab[p] for p in parts]
        if len(self.cache) < 1_000_000:
            self.cache[word] = ids
        return ids

    def encode(self, text, add_bos=False):
        ids = [self.bos_id] if add_bos else []
        for seg in self.special_re.split(text):
            if not seg:
                continue
            if seg in SPECIAL_TOKENS:
                ids.append(self.vocab[seg])
                continue
            for w in pretokenize(seg):
                ids.extend(self.bpe(w))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            tok = self.id_to_token[int(i)]
            if tok in SPECIAL_TOKENS:
                out.extend(tok.encode("utf-8"))
            else:
                out.extend(BYTE_DECODER[ch] for ch in tok)
        return out.decode("utf-8", errors="replace")

    # ---- Hugging Face format -------------------------------------------------------------
    def to_hf_json(self):
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for i, s in enumerate(SPECIAL_TOKENS)]
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False,
                      "vocab": self.vocab, "merges": [f"{a} {b}" for a, b in self.merges]},
        }

    def save(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_hf_json(), f, ensure_ascii=False, indent=None)
            f.write("\n")
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>",
               "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": None,
               "add_bos_token": True, "add_eos_token": False,
               "model_max_length": MODEL_MAX_LENGTH, "clean_up_tokenization_spaces": False}
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path):
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        tok = cls(merges)
        assert tok.vocab == j["model"]["vocab"], "tokenizer.json vocab does not match its merges"
        return tok


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("corpus")
    t.add_argument("out_dir")
    t.add_argument("--vocab", type=int, default=4096)
    e = sub.add_parser("encode")
    e.add_argument("tokenizer")
    e.add_argument("text")
    a = ap.parse_args()
    if a.cmd == "train":
        merges = train_bpe(read_text(a.corpus), a.vocab)
        tok = Tokenizer(merges)
        tok.save(a.out_dir)
        print(f"vocab {tok.vocab_size} -> {a.out_dir}")
    else:
        print(Tokenizer.load(a.tokenizer).encode(a.text))


if __name__ == "__main__":
    main()
