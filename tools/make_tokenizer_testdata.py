#!/usr/bin/python3
"""Writes the tokenizer test fixtures under model/testdata/tokenizer/ (deterministic; offline).

  /usr/bin/python3 tools/make_tokenizer_testdata.py [OUT_DIR]

Needs Debian's python3-sentencepiece and python3-regex (run with /usr/bin/python3). Trains on the
text of /usr/share/common-licenses (plus a few multilingual lines written below).

  sp_legacy/, sp_metaspace/   a SentencePiece BPE model (byte_fallback) converted by
                              tools/sp_to_tokenizer_json.py in both styles
  sp_cases.json               text -> SentencePiece's own ids (the reference for both styles;
                              see "metaspace_ids" for the one principled difference)
  bytelevel_{gpt2,llama3,qwen2}/  one byte-level BPE (merges trained here) in the three
                              pre-tokenizer styles, with added tokens and config files
  bytelevel_cases.json        text -> ids from the independent Python encoder below
  pretokenize_cases.json      text -> regex.findall() pieces for the three patterns
  nfc_cases.json              text -> unicodedata.normalize("NFC", text)
"""
import json
import os
import random
import sys
import tempfile
import unicodedata

import regex
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sp_to_tokenizer_json  # noqa: E402

PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "llama3": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}
MULTILINGUAL = """café naïve résumé façade über straße Ångström déjà vu
Ελληνικά γλώσσα και русский язык в тексте
el niño comió piñata año señor
"""
NUM_MERGES = 360
SP_VOCAB = 700

# Hand-written cases: contractions, numbers, whitespace runs, punctuation, newlines, scripts.
HAND_CASES = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "",
    " ", "  ", " leading space", "   three leading spaces", "trailing space ",
    "trailing spaces   ", "multiple    spaces   between  words", "line one\nline two",
    "paragraph one.\n\nparagraph two.\n", "\n\n\n", "\r\n\r\nwindows\r\nlines\r\n",
    "tab\tseparated\tvalues", " \t mixed \n whitespace \t\n", "  \n  indented\n    more",
    "it's", "don't can't won't", "we're they're you're", "I've we've", "I'm", "we'll you'll",
    "he'd she'd", "IT'S DON'T WE'RE I'VE I'M WE'LL HE'D", "'s 't 're", "''s'''t", "ſ'ſ x'ſ", "it'ſs x'ſſ 'ſt",
    "the dog's bone, the dogs' bones", "rock 'n' roll", "'quoted' \"double\"",
    "In 1961 there were 3,275 votes, 12.5% of 26,000.", "0123456789 and 2026-11-22",
    "x1y22z333w4444", "٣٤٥ ۱۲۳ ²³ Ⅻ ½", "Call 555-1234 now!!!", "!!!???...,,,;;;:::",
    "Wait... what?! (Really?) [yes] {no} <maybe>", "a+b=c; x*y/z", "http://example.com/a?b=c&d",
    "café naïve résumé façade", "Ångström über straße", "Ελληνικά и русский",
    "日本語のテキスト", "中文 and English mixed", "한국어 텍스트", "emoji 🙂 and 👍🏽 and 🇺🇸",
    "e\u0301 and o\u0308\u0301 and A\u030a", "\u212b\u2126 ﬁ", "\u1100\u1161\u11a8 \u1112\u1175",
    "non\u00a0breaking\u3000ideographic\u2003em", "  \u00a0 x", "a\u200bb", "€100 £5 ¥7",
    "tabs\t\t\tthree", "ends with newline\n", "\n starts with newline", "mixed\r\n \r\n end",
    "ALL CAPS SHOUTING", "camelCaseWords and snake_case_words", "1.2.3 v2.0-beta+build",
    "a\nb\rc\td\u000be\u000cf", "  !!  ??  ", "ab  \n\n  cd", "\u0085next line",
]


def read_corpus():
    seen, parts = set(), []
    base = "/usr/share/common-licenses"
    for name in sorted(os.listdir(base)):
        path = os.path.realpath(os.path.join(base, name))
        if path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
    return "\n".join(parts) + MULTILINGUAL * 20


def agree(ch):
    """True when the regex module and unicodedata (our tables) classify ch the same way."""
    cat = unicodedata.category(ch)
    return (bool(regex.match(r"\p{L}", ch)) == cat.startswith("L") and
            bool(regex.match(r"\p{N}", ch)) == cat.startswith("N"))


def random_texts(rng, count, max_len=24):
    alphabet = list("abcXYZ sS'tT\t\n\r\r\n01279.,!?-_()\"") + [
        " ", " ", "  ", "'s", "'LL", "'re", "ſ", "é", "ß", "Ω", "ж", "日", "本", "한", "٣", "²",
        "Ⅻ", "½", "\u00a0", "\u3000", "\u2003", "\u0085", "\u0301", "\u0308", "🙂", "👍🏽", "€",
        "\u1100", "\u1161", "\u11a8", "A\u030a", "\u212b", "<|eos|>", "<|im", "<|im_start|>",
        "<tool>",
    ]
    alphabet = [a for a in alphabet if all(agree(c) for c in a)]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len)))
            for _ in range(count)]


# ---- byte-level BPE --------------------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = bytes_to_unicode()


def to_byte_chars(s):
    return "".join(BYTE_CHARS[b] for b in s.encode("utf-8"))


def train_merges(text, num_merges):
    """Plain BPE training on GPT-2 pre-tokens (most frequent pair, ties by smallest pair)."""
    counts = {}
    for w in regex.findall(PATTERNS["gpt2"], text):
        w = to_byte_chars(w)
        counts[w] = counts.get(w, 0) + 1
    words = [(list(w), c) for w, c in counts.items()]
    merges = []
    for _ in range(num_merges):
        pairs = {}
        for syms, c in words:
            for p in zip(syms, syms[1:]):
                pairs[p] = pairs.get(p, 0) + c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        a, b = best
        for syms, _ in words:
            i = 0
            while i < len(syms) - 1:
                if syms[i] == a and syms[i + 1] == b:
                    syms[i:i + 2] = [a + b]
                i += 1
    return merges


class ByteLevelReference:
    """An independent Python encoder with Hugging Face semantics for one style."""

    def __init__(self, style, vocab, merges, added):
        self.style, self.vocab, self.added = style, vocab, added
        self.ranks = {m: r for r, m in enumerate(merges)}
        alts = sorted(added, key=len, reverse=True)  # longest first = leftmost-longest
        self.added_re = regex.compile("(" + "|".join(regex.escape(a) for a in alts) + ")")
        self.pattern = regex.compile(PATTERNS[style])

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.ranks.get((parts[i], parts[i + 1]), 1 << 30), i)
                      for i in range(len(parts) - 1)]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        ids = []
        for seg in self.added_re.split(text):
            if seg in self.added:
                ids.append(self.added[seg])
                continue
            if self.style == "qwen2":
                seg = unicodedata.normalize("NFC", seg)
            for piece in self.pattern.findall(seg):
                word = to_byte_chars(piece)
                if self.style == "llama3" and word in self.vocab:  # ignore_merges
                    ids.append(self.vocab[word])
                else:
                    ids.extend(self.bpe(word))
        return ids


BYTELEVEL_ADDED = {
    "gpt2": [("<|endoftext|>", True)],
    "llama3": [("<|begin_of_text|>", True), ("<|end_of_text|>", True), ("<|eot_id|>", True),
               ("<tool>", False)],
    "qwen2": [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
              ("<|im", False)],
}


def bytelevel_json(style, vocab, merges, added_ids):
    added = [{"id": added_ids[c], "content": c, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": s}
             for c, s in BYTELEVEL_ADDED[style]]
    model = {"type": "BPE", "dropout": None, "unk_token": None,
             "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
             "byte_fallback": False, "vocab": vocab}
    decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
               "use_regex": True}
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
         "normalizer": None, "post_processor": None, "decoder": decoder, "model": model}
    if style == "gpt2":
        j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False,
                              "trim_offsets": True, "use_regex": True}
        model["merges"] = [f"{a} {b}" for a, b in merges]
    else:
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERNS[style]}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]}
    if style == "llama3":
        model["ignore_merges"] = True
        model["merges"] = [[a, b] for a, b in merges]
        j["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [], "special_tokens": {}}]}
    if style == "qwen2":
        j["normalizer"] = {"type": "NFC"}
        model["merges"] = [f"{a} {b}" for a, b in merges]
    return j


def write_json(path, obj, compact=True):
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def make_bytelevel(out, corpus, texts):
    merges = train_merges(corpus, NUM_MERGES)
    vocab = {BYTE_CHARS[b]: i for i, b in enumerate(range(256))}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    cases = {}
    for style in ("gpt2", "llama3", "qwen2"):
        added_ids = {c: len(vocab) + i for i, (c, _) in enumerate(BYTELEVEL_ADDED[style])}
        d = os.path.join(out, f"bytelevel_{style}")
        os.makedirs(d, exist_ok=True)
        write_json(os.path.join(d, "tokenizer.json"),
                   bytelevel_json(style, vocab, merges, added_ids))
        if style == "llama3":  # bos from the post-processor; eos list from generation_config
            write_json(os.path.join(d, "tokenizer_config.json"),
                       {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, False)
            write_json(os.path.join(d, "generation_config.json"),
                       {"bos_token_id": added_ids["<|begin_of_text|>"],
                        "eos_token_id": [added_ids["<|end_of_text|>"], added_ids["<|eot_id|>"]]},
                       False)
        if style == "qwen2":  # no bos; eos from config.json wins over tokenizer_config
            write_json(os.path.join(d, "tokenizer_config.json"),
                       {"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False},
                       False)
            write_json(os.path.join(d, "config.json"),
                       {"bos_token_id": None, "eos_token_id": added_ids["<|endoftext|>"],
                        "pad_token_id": added_ids["<|endoftext|>"]}, False)
        ref = ByteLevelReference(style, vocab, merges, added_ids)
        cases[style] = [{"text": t, "ids": ref.encode(t)} for t in texts]
    write_json(os.path.join(out, "bytelevel_cases.json"), cases)


# ---- SentencePiece ---------------------------------------------------------------------------
SP_CASES = [t for t in HAND_CASES if "\r" not in t] + [
    "Hello, World! 123", "Ünïcödé mixed with ASCII", "日本", "🙂", "a🙂b", "x  y   z",
    "\u2581literal metaspace", "GNU General Public License version 3",
    "Copyright (C) 2007 Free Software Foundation, Inc.", "emoji🙂🙂", "привет, мир",
]


def make_sentencepiece(out, corpus):
    with tempfile.TemporaryDirectory() as tmp:
        txt = os.path.join(tmp, "corpus.txt")
        with open(txt, "w", encoding="utf-8") as f:
            f.write(corpus)
        prefix = os.path.join(tmp, "sp")
        spm.SentencePieceTrainer.train(
            input=txt, model_prefix=prefix, model_type="bpe", vocab_size=SP_VOCAB,
            byte_fallback=True, character_coverage=0.9995, split_digits=True,
            allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
            normalization_rule_name="identity", add_dummy_prefix=True, unk_id=0, bos_id=1,
            eos_id=2, pad_id=-1, num_threads=2, minloglevel=2)
        model = prefix + ".model"
        for style in ("legacy", "metaspace"):
            sp_to_tokenizer_json.write(model, os.path.join(out, f"sp_{style}"), style)
        sp = spm.SentencePieceProcessor(model_file=model)
        cases = []
        for t in SP_CASES:
            # The one principled difference: HF's Metaspace pre-tokenizer does not prepend "▁"
            # to text that already starts with one (a leading space or a literal "▁"),
            # SentencePiece always adds its dummy prefix. For such text the metaspace style
            # encodes what SentencePiece does for the text without its first character.
            if t.startswith(" ") or t.startswith("\u2581"):
                meta = sp.encode(t[1:]) if len(t) > 1 else [sp.piece_to_id("\u2581")]
            else:
                meta = sp.encode(t)
            cases.append({"text": t, "ids": sp.encode(t), "metaspace_ids": meta})
        write_json(os.path.join(out, "sp_cases.json"), {"cases": cases}, compact=False)


# ---- pre-tokenization and NFC ----------------------------------------------------------------
def make_pretokenize(out, texts):
    cases = {name: [{"text": t, "pieces": regex.findall(p, t)} for t in texts]
             for name, p in PATTERNS.items()}
    write_json(os.path.join(out, "pretokenize_cases.json"), cases)


def make_nfc(out, rng):
    alphabet = ["a", "e", "o", "A", "u", "\u0301", "\u0300", "\u0308", "\u0323", "\u031b",
                "\u0345", "\u0338", "\u05b0", "\u0327", "é", "ǖ", "ṩ", "\u212b", "\u2126",
                "\u0340", "\u0344", "\u0958", "ﬁ", "\u1100", "\u1112", "\u1161", "\u1175",
                "\u11a8", "\u11c2", "\uac00", "\uac01", "=", "\u226e", "<", " ", "ω", "\u03b9",
                "\u1f00", "\u0915", "\u093c", "Å"]
    texts = ["", "plain ascii", "café", "cafe\u0301", "A\u030a\u0301", "\u212b", "\u1e0b\u0323",
             "q\u0307\u0323", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u0344", "\u0958",
             "\u00e9\u0301", "\u0301abc", "a\u0301\u0301", "\u2126mega", "ﬁne",
             "<\u0338", "\u03c9\u0345\u0301", "e\u0323\u0302", "e\u0302\u0323"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
              for _ in range(250)]
    bmp = [c for c in range(0x80, 0x3000) if unicodedata.category(chr(c)) in
           ("Lu", "Ll", "Lo", "Mn", "Mc")]
    texts += ["".join(chr(rng.choice(bmp)) for _ in range(rng.randint(1, 8)))
              for _ in range(150)]
    cases = [{"text": t, "nfc": unicodedata.normalize("NFC", t)} for t in texts]
    write_json(os.path.join(out, "nfc_cases.json"), cases)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "model/testdata/tokenizer")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261122)
    corpus = read_corpus()
    texts = HAND_CASES + random_texts(rng, 80)
    make_pretokenize(out, texts)
    make_nfc(out, rng)
    make_sentencepiece(out, corpus)
    make_bytelevel(out, corpus, texts)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
