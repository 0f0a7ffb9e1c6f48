#!/bin/bash
# Do kvspan and llama.cpp run the same model? Feeds the same token ids of models/kvspan-brown
# to both (kvspan: build/bench/kvspan_ids --weights f32; llama.cpp: llama_ids over the f32 GGUF
# that kvspan_to_gguf.py writes) and compares greedy continuations, perplexity on held-out
# Brown text and every logit, each engine also against the PyTorch reference
# (models/kvspan-brown/reference). Prints a Markdown section and writes it into
# docs/performance.md (section peers_outputs).
#
#   bench/peers/compare_outputs.sh [--dir DIR] [--out FILE.md | --out ""] [--threads 2]
#                                  [--also MODEL_DIR]
#
# --also MODEL_DIR adds a check of another checkpoint (e.g. the random 1B-shape one, whose
# llama3 RoPE scaling and tied embeddings kvspan-brown lacks): the logits of 200 random ids
# from both engines at f32 (two 1B processes, one after the other).
#
# REQUIRES: bench/peers/build_llama_cpp.sh has run (DIR, default $KVSPAN_PEERS_DIR or
# /tmp/kvspan-peers) and build/bench/{kvspan_ids,write_doc_section} are built
# (cmake --build --preset default --target kvspan_ids write_doc_section).
set -euo pipefail
cd "$(dirname "$0")/../.."
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "compare_outputs.sh: $*" >&2; exit 1; }

dir="${KVSPAN_PEERS_DIR:-/tmp/kvspan-peers}"
out=docs/performance.md
threads=2
also=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --out) out="${2?--out needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --also) also="${2:?--also needs a value}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
command_line="bench/peers/compare_outputs.sh --threads $threads${also:+ --also $also}"
model=models/kvspan-brown
py=/usr/bin/python3
kvspan_ids=build/bench/kvspan_ids
llama_ids="$dir/llama_ids"
[[ -x "$llama_ids" ]] || die "no $llama_ids: run bench/peers/build_llama_cpp.sh --dir $dir"
[[ -x "$kvspan_ids" && -x build/bench/write_doc_section ]] \
  || die "build kvspan first: cmake --build --preset default --target kvspan_ids write_doc_section"

source bench/peers/lib.sh
gguf=$(peers_gguf "$model" f32)

work="$dir/compare"
mkdir -p "$work"
"$py" bench/peers/compare_outputs.py --reference "$model/reference" --write-prompt-ids "$work/prompts.ids"
xz -dc tools/corpus/brown_valid.txt.xz > "$work/brown_valid.txt"
# The windows are cut and tokenized by kvspan (written to windows.ids), then read by llama_ids.
"$kvspan_ids" --model "$model" --weights f32 --threads "$threads" --text "$work/brown_valid.txt" --windows 4 \
  --window-tokens 1024 --ids-out "$work/windows.ids" --logits-out "$work/kvspan.windows.logits" \
  > "$work/kvspan.windows.txt" 2> "$work/kvspan.log" || die "kvspan_ids failed; see $work/kvspan.log"
"$kvspan_ids" --model "$model" --weights f32 --threads "$threads" --ids "$work/prompts.ids" --n-predict 32 \
  --logits-out "$work/kvspan.prompts.logits" > "$work/kvspan.prompts.txt" 2>> "$work/kvspan.log" \
  || die "kvspan_ids failed; see $work/kvspan.log"
for part in prompts windows; do
  n_predict=0
  [[ "$part" == prompts ]] && n_predict=32
  "$llama_ids" --model "$gguf" --threads "$threads" --ids "$work/$part.ids" --n-predict "$n_predict" \
    --logits-out "$work/llama.$part.logits" > "$work/llama.$part.txt" 2>> "$work/llama.log" \
    || die "llama_ids failed; see $work/llama.log"
done
section=$("$py" bench/peers/compare_outputs.py --work "$work" --reference "$model/reference" --command "$command_line")
if [[ -n "$also" ]]; then
  also_gguf=$(peers_gguf "$also" f32)
  "$py" bench/peers/compare_outputs.py --write-random-ids "$work/also.ids" --model-config "$also/config.json"
  "$kvspan_ids" --model "$also" --weights f32 --threads "$threads" --ids "$work/also.ids" --n-predict 8 \
    --logits-out "$work/kvspan.also.logits" > "$work/kvspan.also.txt" 2>> "$work/kvspan.log" \
    || die "kvspan_ids on $also failed; see $work/kvspan.log"
  "$llama_ids" --model "$also_gguf" --threads "$threads" --ids "$work/also.ids" --n-predict 8 \
    --logits-out "$work/llama.also.logits" > "$work/llama.also.txt" 2>> "$work/llama.log" \
    || die "llama_ids on $also failed; see $work/llama.log"
  section+=$'\n\n'$("$py" bench/peers/compare_outputs.py --work "$work" --also "$also")
fi
echo "$section"
if [[ -n "$out" ]]; then
  echo "$section" | build/bench/write_doc_section "$out" peers_outputs
fi
