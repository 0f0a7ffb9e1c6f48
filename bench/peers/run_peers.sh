#!/bin/bash
# kvspan beside llama.cpp (issue 14): bench/model_bench and llama-bench interleaved round by
# round in one run, at matching weight formats (kvspan f32 / bf16 / int8 / int4 against
# llama.cpp f32 / bf16 / q8_0 / q4_0), the same threads and the same context depths: prefill of
# a 512-token prompt into an empty context (llama-bench pp512), decode of 64 tokens at batch 1
# after a 128-token context (llama-bench tg64 -d 128; model_bench's decode context). kvspan's
# batched decode (--batches) is reported beside it. Prints one Markdown table (means over the
# rounds) with the command, the date, the machine and the load averages, and writes it into
# docs/performance.md (section peers).
#
#   bench/peers/run_peers.sh [--dir DIR] [--rounds 1] [--reps 6] [--batches 8,32]
#                            [--formats f32,bf16,int8,int4] [--threads 2]
#                            [--out FILE.md | --out ""] [--section peers] MODEL_DIR...
#
#   --dir      where build_llama_cpp.sh built llama.cpp (default $KVSPAN_PEERS_DIR, else
#              /tmp/kvspan-peers); the GGUF files go to DIR/gguf (converted once, then reused)
#   --rounds   interleaved rounds (each runs every model and format once on both engines)
#   --reps     llama-bench repetitions per test (-r; its mean is one round's value)
#   --batches  kvspan's extra decode batch sizes (model_bench --batches 1,BATCHES; "" = none)
#   --formats  kvspan formats to run, each beside its llama.cpp peer (f32, bf16, int8 / q8_0,
#              int4 / q4_0), in table order; bf16dot is bf16 weights with x rounded to bf16
#              (KVSPAN_CPU_ISA=avx512-bf16dot: ggml's arithmetic for bf16), beside bf16
#   --section  the docs/ section the table replaces (a shorter run can keep the full one)
#
# REQUIRES: bench/peers/build_llama_cpp.sh has run; build/bench/{model_bench,write_doc_section}
# are built. One process at a time: the 1B shape needs up to 5 GB (f32) of the 24 GiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "run_peers.sh: $*" >&2; exit 1; }

dir="${KVSPAN_PEERS_DIR:-/tmp/kvspan-peers}"
rounds=1
reps=6
batches=8,32
threads=2
out=docs/performance.md
section_name=peers
formats=f32,bf16,int8,int4
readonly prefill=512 decode=64 depth=128
args_given=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
    --reps) reps="${2:?--reps needs a value}"; shift 2 ;;
    --batches) batches="${2?--batches needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --out) out="${2?--out needs a value}"; shift 2 ;;
    --section) section_name="${2:?--section needs a value}"; shift 2 ;;
    --formats) formats="${2:?--formats needs a value}"; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown flag: $1" >&2; usage 2 ;;
    *) break ;;
  esac
done
models=("$@")
[[ ${#models[@]} -gt 0 ]] || usage 2
py=/usr/bin/python3
bin="$dir/build/bin"
model_bench=build/bench/model_bench
for f in "$bin/llama-bench" "$bin/llama-quantize"; do
  [[ -x "$f" ]] || die "no $f: run bench/peers/build_llama_cpp.sh --dir $dir"
done
[[ -x "$model_bench" && -x build/bench/write_doc_section ]] \
  || die "build kvspan first: cmake --build --preset default --target model_bench write_doc_section"
for m in "${models[@]}"; do
  [[ -f "$m/config.json" && -f "$m/model.safetensors" ]] || die "$m: no config.json / model.safetensors"
done
# kvspan --weights and llama.cpp's type for the same format, in table order.
declare -A peer_of=([f32]=f32 [bf16]=bf16 [bf16dot]=bf16 [int8]=q8_0 [int4]=q4_0)
pairs=()
for f in ${formats//,/ }; do
  [[ -n "${peer_of[$f]:-}" ]] || die "--formats: '$f' is not one of f32, bf16, bf16dot, int8, int4"
  pairs+=("$f:${peer_of[$f]}")
done

# 1. GGUF files (not timed): f32 and bf16 by the converter, q8_0 / q4_0 by llama-quantize
#    from the f32 one (default llama-quantize recipe: what llama.cpp's users run). lib.sh.
source bench/peers/lib.sh
for m in "${models[@]}"; do
  for pair in "${pairs[@]}"; do peers_gguf "$m" "${pair##*:}" > /dev/null; done
done

# 2. The rounds. Raw lines (one per measurement, with the 1-minute load) go to $raw:
#    kvspan ROUND MODEL FORMAT BATCH WEIGHT_GB RSS_GB PREFILL_TPS DECODE_TPS DECODE_GBS LOAD
#    llama  ROUND MODEL FORMAT WEIGHT_GB MAXRSS_GB PP_TPS TG_TPS LOAD
raw="$dir/peers-raw.txt"
: > "$raw"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
llama_bench_tps() {  # GGUF ARGS...: avg_ts of one llama-bench test; max RSS (kB) appended to $rss_file
  local g="$1"; shift
  local json
  json=$(/usr/bin/time -f "%M" -a -o "$rss_file" "$bin/llama-bench" -m "$g" -t "$threads" -r "$reps" -o jsonl "$@" \
         2>>"$dir/llama-bench.log") || die "llama-bench $* on $g failed; see $dir/llama-bench.log"
  grep -o '"avg_ts": [0-9.e+-]*' <<< "$json" | head -1 | cut -d' ' -f2
}
for round in $(seq "$rounds"); do
  for m in "${models[@]}"; do
    name=$(basename "$m")
    declare -A llama_ran=()  # llama.cpp formats run this round (bf16 and bf16dot share one)
    for pair in "${pairs[@]}"; do
      kv="${pair%%:*}" ll="${pair##*:}"
      # kvspan: stdout is model_bench's Markdown table; its rows carry every number we need.
      isa=auto weights="$kv"
      [[ "$kv" == bf16dot ]] && isa=avx512-bf16dot weights=bf16
      if table=$(KVSPAN_CPU_ISA="$isa" "$model_bench" --model "$m" --threads "$threads" --weights "$weights" --prefill-tokens "$prefill" \
                   --decode-tokens "$decode" --batches "1${batches:+,$batches}" --stream-mib 64 --out "" 2>"$dir/model_bench.log"); then
        # | model | weights | GB/step | RSS | prefill tokens | prefill tok/s | batch | decode tok/s | GB/s | ... |
        awk -F'|' -v r="$round" -v n="$name" -v f="$kv" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
          '$8 ~ /^ *[0-9]+ *$/ { gsub(/ /, ""); print "kvspan", r, n, f, $8, $4, $5, $7, $9, $10, load }' \
          <<< "$table" | tee -a "$raw" >&2
      else
        reason=$(grep -v "^model_bench: CPU" "$dir/model_bench.log" | head -1)
        die "model_bench --weights $kv on $m failed: $reason"
      fi
      # llama.cpp: prefill into an empty context, then decode after `depth` tokens.
      [[ -n "${llama_ran[$ll]:-}" ]] && continue
      llama_ran[$ll]=1
      g=$(peers_gguf "$m" "$ll")
      rss_file=$(mktemp)
      pp=$(llama_bench_tps "$g" -p "$prefill" -n 0 -d 0)
      tg=$(llama_bench_tps "$g" -p 0 -n "$decode" -d "$depth")
      rss_kb=$(sort -n "$rss_file" | tail -1)
      rm -f "$rss_file"
      bytes=$("$py" bench/peers/gguf_weight_bytes.py "$g" --gguf-py "$dir/llama.cpp/gguf-py")
      echo "llama $round $name $ll $(awk -v b="$bytes" -v k="$rss_kb" -v pp="$pp" -v tg="$tg" \
        'BEGIN { printf "%.3f %.3f %.2f %.2f", b / 1e9, k * 1024 / 1e9, pp, tg }') $(cut -d' ' -f1 /proc/loadavg)" \
        | tee -a "$raw" >&2
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# 3. The table: means over the rounds; kvspan's rows say how they compare with llama.cpp's.
command_line="bench/peers/run_peers.sh$(printf ' %q' "${args_given[@]}")"
section=$(
  echo "Measured $started by \`$command_line\` on $(uname -m), $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores), $threads threads, mean of $rounds interleaved round(s) (llama-bench: mean of $reps repetitions per round); load average $load_before before, $load_after after. llama.cpp v0.5.0 (commit $(git -C "$dir/llama.cpp" rev-parse --short HEAD), from node-llama-cpp 3.22.1$(git -C "$dir/llama.cpp" diff --quiet || echo ", with bench/peers/llama_cpp_amx_ldtilecfg.patch")) built by \`bench/peers/build_llama_cpp.sh\`: GGML_NATIVE, CPU backend$(grep -q -- '-mamx-int8' "$dir/build/CMakeCache.txt" && echo ", AMX compiled in (used only where the CPU has it; $(grep -q amx_tile /proc/cpuinfo && echo "this one has it" || echo "this one has none"))")."
  echo
  echo "| model | format | engine | weights read per step (GB) | RSS (GB) | prefill $prefill tok/s | × llama.cpp | decode tok/s, batch 1 | × llama.cpp | weights GB/s at batch 1 | decode tok/s, batch ${batches//,/ / } |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -v batches="$batches" '
    $1 == "kvspan" { k = $3 " " $4; if ($5 == 1) { kw[k] = $6; kr[k] = $7; kp[k] += $8; kd[k] += $9; kg[k] += $10; kn[k]++ }
                     else { kb[k, $5] += $9; kbn[k, $5]++ } }
    $1 == "llama"  { k = $3 " " $4; lw[k] = $5; lr[k] = ($6 > lr[k] ? $6 : lr[k]); lp[k] += $7; ld[k] += $8; ln[k]++
                     if (!(k in seen)) { seen[k] = 1; order[++count] = k } }
    END {
      nb = split(batches, b, ",");
      map["f32"] = "f32"; map["bf16"] = "bf16 bf16dot"; map["q8_0"] = "int8"; map["q4_0"] = "int4";
      label["bf16dot"] = "bf16, x as bf16";
      for (i = 1; i <= count; i++) {
        split(order[i], p, " "); m = p[1]; lk = order[i];
        lp_mean = lp[lk] / ln[lk]; ld_mean = ld[lk] / ln[lk];
        nk = split(map[p[2]], kfs, " ");
        for (f = 1; f <= nk; f++) {
        kk = m " " kfs[f]; fmt = (kfs[f] in label ? label[kfs[f]] : kfs[f]) " / " p[2];
        if (!(kk in kn)) continue;
          bs = "";
          for (j = 1; j <= nb; j++) bs = bs (j > 1 ? " / " : "") sprintf("%.2f", kb[kk, b[j]] / kbn[kk, b[j]]);
          printf "| %s | %s | kvspan | %.3f | %.3f | %.1f | %.2f | %.2f | %.2f | %.2f | %s |\n", m, fmt, kw[kk], kr[kk],
                 kp[kk] / kn[kk], kp[kk] / kn[kk] / lp_mean, kd[kk] / kn[kk], kd[kk] / kn[kk] / ld_mean,
                 kg[kk] / kn[kk], bs;
        }
        fmt = kfs[1] " / " p[2];
        printf "| %s | %s | llama.cpp | %.3f | %.3f | %.1f | | %.2f | | %.2f | - |\n", m, fmt, lw[lk], lr[lk], lp_mean, ld_mean,
               ld_mean * lw[lk];
      }
    }' "$raw"
  echo
  echo "Prefill: one $prefill-token prompt into an empty context (model_bench: the second of two runs; llama-bench: pp$prefill at depth 0). Decode: $decode steps at batch 1 after a $depth-token context (llama-bench: tg$decode -d $depth). \"× llama.cpp\": kvspan's tok/s over llama.cpp's at the same format in the same run. Weights read per step: every matrix (the lm_head, or a tied embedding, included), not an untied embedding; weights GB/s = that × decode tok/s (model_bench adds the fp32 KV cache). RSS: kvspan's resident set right after loading; llama.cpp's maximum RSS of its llama-bench processes (/usr/bin/time; weights memory-mapped, plus KV and compute buffers). llama.cpp's KV cache is llama-bench's default (f16), kvspan's fp32. q8_0 and q4_0 come from \`llama-quantize\` with its default recipe (q4_0 keeps a few tensors, such as the output matrix, at higher precision). Raw per-round lines: \`$raw\`."
)
echo "$section"
if [[ -n "$out" ]]; then
  echo "$section" | build/bench/write_doc_section "$out" "$section_name"
fi
