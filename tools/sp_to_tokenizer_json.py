#!/usr/bin/python3
"""Converts a SentencePiece BPE model to a Hugging Face tokenizer.json, mirroring
transformers' LlamaConverter (Llama 2 / Mistral style: metaspace, byte fallback).

  /usr/bin/python3 tools/sp_to_tokenizer_json.py MODEL.model OUT_DIR [--style legacy|metaspace]

What it writes (as LlamaConverter does):
  vocab      every piece -> its id
  merges     for every piece, each split into two pieces that are both in the vocabulary,
             ordered by the merged piece's score (highest first; ties by the left, then right
             piece's id), so HF's lowest-rank-first BPE equals SentencePiece's highest-score-first
  model      BPE with byte_fallback: true, fuse_unk: true, unk_token = the unk piece
  added      the unk, bos and eos pieces, special, normalized: false
  style legacy (Llama 2): normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer
  style metaspace (legacy=False files, e.g. Mistral): no normalizer, pre-tokenizer
             Metaspace(replacement "▁", prepend_scheme "first", split false)
  decoder    Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]
  post_processor TemplateProcessing that puts bos first
Also writes OUT_DIR/tokenizer_config.json (bos_token, eos_token, unk_token, add_bos_token).
Needs Debian's python3-sentencepiece (run with /usr/bin/python3).
"""
import argparse
import json
import os

import sentencepiece as spm

SPACE = "\u2581"


def extract_merges(sp):
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, pid in vocab.items():
        # Only normal pieces are made by merging (the converter would find no split of the
        # others anyway; skipping them keeps "<s>" from ever being a merge target).
        if sp.is_unknown(pid) or sp.is_control(pid) or sp.is_byte(pid) or sp.is_unused(pid):
            continue
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, sp.get_score(pid)))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)  # stable: keeps the order above on ties
    return vocab, [[a, b] for a, b, _ in merges]


def convert(model_path, style):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    vocab, merges = extract_merges(sp)
    unk, bos, eos = sp.unk_id(), sp.bos_id(), sp.eos_id()
    added = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i in sorted(x for x in (unk, bos, eos) if x >= 0)]
    replace_space = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    if style == "legacy":
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE}, replace_space]}
        pre_tokenizer = None
    else:
        normalizer = None
        pre_tokenizer = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first",
                         "split": False}
    bos_piece = sp.id_to_piece(bos)
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos_piece, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos_piece, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos_piece, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos_piece: {"id": bos_piece, "ids": [bos], "tokens": [bos_piece]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": sp.id_to_piece(unk),
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }, {"bos_token": bos_piece, "eos_token": sp.id_to_piece(eos),
        "unk_token": sp.id_to_piece(unk), "add_bos_token": True, "add_eos_token": False,
        "legacy": style == "legacy", "tokenizer_class": "LlamaTokenizerFast"}


def write(model_path, out_dir, style):
    tok, cfg = convert(model_path, style)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out_dir")
    ap.add_argument("--style", choices=["legacy", "metaspace"], default="legacy")
    a = ap.parse_args()
    write(a.model, a.out_dir, a.style)


if __name__ == "__main__":
    main()
