#!/usr/bin/env bash
# Builds the span-decoder fuzzer (bench/fuzz_span_decode.cc) with clang, libFuzzer, ASan
# and UBSan in its own folder, writes a seed corpus of valid spans and fuzzes for N seconds.
#   bench/run_fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
# A crash leaves crash-* / leak-* files in BUILD_DIR and a non-zero exit status.
# Not part of the CMake build (CI compiles with g++); the seed writer is (fuzz_span_seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out="${2:-build-fuzz}"
cxx="${CXX_FUZZ:-clang++}"
mkdir -p "$out/seeds" "$out/corpus"

srcs=(kvcache/span_geometry.cc kvcache/entry_block.cc kvcache/span.cc kvcache/span_format.cc
      kvcache/internal/block_checks.cc kvcache/internal/quantize.cc
      kvcache/testing/random_span.cc)
libs=$(pkg-config --libs absl_statusor absl_strings absl_str_format libxxhash)
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -I.)

echo "+ building $out/fuzz_span_decode with $cxx"
"$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  bench/fuzz_span_decode.cc "${srcs[@]}" $libs -o "$out/fuzz_span_decode"
"$cxx" "${flags[@]}" -DKVSPAN_FUZZ_SEED_WRITER \
  bench/fuzz_span_decode.cc "${srcs[@]}" $libs -o "$out/fuzz_seed_writer"
"$out/fuzz_seed_writer" "$out/seeds"

echo "+ $out/fuzz_span_decode -max_total_time=$seconds -max_len=4096 $out/corpus $out/seeds"
cd "$out"
./fuzz_span_decode -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  corpus seeds
