#!/bin/bash
# Runs bench/serve_bench (issue 9) from the repo root against two `kvspan serve` processes
# on 127.0.0.1, each with its own temporary --data directory: one with the default KV
# budget (TTFT, decode, trace parts) and one with --kv-budget-bytes $KV_BUDGET_BYTES (the
# admission part). Writes docs/performance.md, section serve_bench; stops the servers.
#   bench/run_serve_bench.sh [build dir] [extra serve_bench flags...]
# A smoke run (well under a minute on the shipped model):
#   bench/run_serve_bench.sh build --out /tmp/serve_bench.md --reps 1 --prompt-lengths 256 \
#     --concurrency-levels 1,4 --admission-streams 8 --admission-seconds 5 --sessions 2 --turns 2
# TTFT on the Llama-3.2-1B-shape random model (build/tools/make_random_model --shape
# llama-3.2-1b --dtype bf16 --out /tmp/llama-3.2-1b --tokenizer-from models/kvspan-brown),
# its own section:
#   MODEL=/tmp/llama-3.2-1b bench/run_serve_bench.sh build --section serve_bench_llama_1b \
#     --parts ttft --prompt-lengths 1024,4096 --reps 1
set -euo pipefail
launcher="bench/run_serve_bench.sh $*"
cd "$(dirname "$0")/.."
build="${1:-build}"
shift || true
kvspan="$build/node/kvspan"
bench="$build/bench/serve_bench"
for bin in "$kvspan" "$bench"; do
  if [[ ! -x "$bin" ]]; then
    echo "missing $bin: cmake --build $build --target kvspan serve_bench" >&2
    exit 1
  fi
done
model="${MODEL:-models/kvspan-brown}"
budget="${KV_BUDGET_BYTES:-2097152}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/kvspan_serve_bench.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_server NAME [serve flags...]: starts it, waits for its ready line (60 s at most),
# and sets $address to the host:port it listens on.
start_server() {
  local name="$1"
  shift
  "$kvspan" serve --model "$model" --listen 127.0.0.1:0 --data "$tmp/$name" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    grep -q '^kvspan serve: ready' "$tmp/$name.out" && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "kvspan serve ($name) exited:" >&2
      cat "$tmp/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  address="$(sed -n 's/^kvspan serve: listening on //p' "$tmp/$name.out")"
  if [[ -z "$address" ]]; then
    echo "kvspan serve ($name) printed no address within 60 s" >&2
    exit 1
  fi
}

start_server main
main_address="$address"
start_server budget --kv-budget-bytes "$budget"
budget_address="$address"

"$bench" --target "$main_address" --budget-target "$budget_address" \
  --launcher "${launcher% }" \
  --servers "\`${OPENBLAS_CORETYPE:+OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE }kvspan serve --model $model --listen 127.0.0.1:0 --data TMP\`; for the admission part the same with \`--kv-budget-bytes $budget\`" \
  "$@"
