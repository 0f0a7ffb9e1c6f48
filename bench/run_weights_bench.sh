#!/bin/bash
# Weight formats side by side (issue 14): bench/model_bench at --weights f32 / bf16 / int8 / int4 (group 32),
# optionally beside another build's model_bench (e.g. main's, fp32 only), interleaved
# round by round in one run so that the shared machine's load hits every row alike.
# Prints one Markdown table of means over the rounds (prefill tok/s, decode tok/s, RSS
# after load) with the command, the date and the load averages.
#
#   bench/run_weights_bench.sh [--before /path/to/old/model_bench] [--rounds 2] [--batches 1,8] MODEL_DIR...
set -euo pipefail
cd "$(dirname "$0")/.."
before=""
rounds=2
prefill=512
decode=64
batches=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --before) before="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --prefill-tokens) prefill="$2"; shift 2 ;;
    --decode-tokens) decode="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    *) break ;;
  esac
done
models=("$@")
bench=build/bench/model_bench
log=$(mktemp)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$rounds"); do
  for model in "${models[@]}"; do
    configs=("f32" "bf16" "int8" "int4")
    [[ -n "$before" ]] && configs=("before" "${configs[@]}")
    for config in "${configs[@]}"; do
      args=(--model "$model" --threads 2 --prefill-tokens "$prefill" --decode-tokens "$decode" --batches "$batches"
            --stream-mib 64 --out "")
      if [[ "$config" == before ]]; then
        lines=$("$before" "${args[@]}" 2>&1 >/dev/null | grep " batch [0-9]*:" | sed "s|^$model|$model before|")
      else
        lines=$("$bench" "${args[@]}" --weights "$config" 2>&1 >/dev/null | grep " batch [0-9]*:")
      fi
      while read -r line; do
        echo "round $round: $line ($(cut -d' ' -f1 /proc/loadavg))" | tee -a "$log" >&2
      done <<< "$lines"
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/run_weights_bench.sh ${before:+--before $before }--rounds $rounds --prefill-tokens $prefill --decode-tokens $decode --batches $batches ${models[*]}\` (2 threads, mean of $rounds interleaved rounds; load average $load_before before, $load_after after)."
echo
echo "| model | weights | RSS after load (GB) | prefill tok/s | decode batch | decode tok/s | decode GB/s |"
echo "|---|---|---:|---:|---:|---:|---:|"
# Lines: "round R: MODEL WEIGHTS batch N: prefill P tok/s, decode D tok/s, G GB/s[, RSS after load S GB] (L)"
awk '{
  key = $3 " " $4 " " substr($6, 1, length($6) - 1); prefill[key] += $8; decode[key] += $11; gbs[key] += $13; n[key]++;
  rss[key] = ($0 ~ /RSS after load/) ? $18 : "-";
  if (!(key in order)) { order[key] = ++count; keys[count] = key }
}
END {
  for (i = 1; i <= count; i++) {
    k = keys[i]; split(k, parts, " ");
    printf "| %s | %s | %s | %.1f | %s | %.2f | %.2f |\n", parts[1], parts[2], rss[k], prefill[k] / n[k], parts[3], decode[k] / n[k], gbs[k] / n[k]
  }
}' "$log"
rm -f "$log"
