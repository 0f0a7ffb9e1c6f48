#!/usr/bin/python3
"""Prints the bytes of weights one decode step of llama.cpp reads from a GGUF file, counted as
bench/model_bench counts kvspan's (Model::weight_bytes): every tensor, except that an untied
token_embd only contributes the rows of the step's tokens (taken as none).

  /usr/bin/python3 bench/peers/gguf_weight_bytes.py FILE.gguf [--gguf-py DIR]
"""
import argparse
import os
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gguf_file")
    p.add_argument("--gguf-py", default=os.path.join(os.environ.get("KVSPAN_PEERS_DIR", "/tmp/kvspan-peers"),
                                                     "llama.cpp", "gguf-py"))
    args = p.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf  # noqa: E402  (from the llama.cpp tree)

    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(args.gguf_file).tensors}
    total = sum(tensors.values())
    if "output.weight" in tensors:  # untied: the embedding is a lookup table, not a matrix product
        total -= tensors.get("token_embd.weight", 0)
    print(total)


if __name__ == "__main__":
    main()
