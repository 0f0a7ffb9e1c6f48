#!/bin/bash
# The one prepared GPU check (issue 13): on a lent GPU machine, builds kernels/cuda on its own
# (kernels/cuda/standalone: CUDA, GoogleTest and Abseil only), runs every CUDA test, runs the
# CPU-emulated kernel tests there too, runs compute-sanitizer's memcheck over the span
# attention tests, and runs the GPU benchmarks, writing a log, the tests' XML and the
# benchmark tables under $OUT. Meant to finish in well under 8 minutes, so that a session
# can run it once and rerun it once inside its 15 minutes of device time.
#
#   tools/device_check.sh --prepare    # here, with apt: Debian's GoogleTest and Abseil .debs
#                                      # into .devdeps/ (ignored by git; about 1.7 MB)
#   tools/device_check.sh              # there: the device tool's run with carry [".devdeps"]
#
# The device machine has CMake, ninja, nvcc and a host compiler but no package registry;
# the .debs are unpacked with dpkg -x into /tmp, never into /. Exit status: 0 when every
# step passed; the summary at the end names each step's result.
set -uo pipefail
cd "$(dirname "$0")/.."
readonly deps_dir=.devdeps
readonly packages=(libgtest-dev libgmock-dev libabsl-dev libabsl20220623)

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$deps_dir"
  (cd "$deps_dir" && rm -f ./*.deb && apt-get download "${packages[@]}") || exit 1
  ls -la "$deps_dir"
  exit 0
fi

out="${OUT:-/tmp/kvspan-device-out}"
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
start=$(date +%s)
declare -a summary=()
status=0
step() {  # step NAME TIMEOUT_S COMMAND...: runs it, records pass/fail and its seconds
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "=== $name"
  timeout "$limit" "$@"
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [[ $rc -eq 0 ]]; then summary+=("PASS $name (${dt} s)"); else summary+=("FAIL $name: exit $rc (${dt} s)"); status=1; fi
  return $rc
}

echo "kvspan device check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
nvcc --version | tail -2 || true

sysroot=/tmp/kvspan-devdeps
rm -rf "$sysroot" && mkdir -p "$sysroot"
for f in "$deps_dir"/*.deb; do
  [[ -f "$f" ]] || { echo "no .deb in $deps_dir: run tools/device_check.sh --prepare here and carry $deps_dir"; exit 1; }
  dpkg -x "$f" "$sysroot"
done
export LD_LIBRARY_PATH="$sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
lib="$sysroot/usr/lib/x86_64-linux-gnu/cmake"
build=/tmp/kvspan-cuda
step configure 120 cmake -S kernels/cuda/standalone -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$sysroot/usr" -Dabsl_DIR="$lib/absl" -DGTest_DIR="$lib/GTest" \
  && step build 300 cmake --build "$build" -j "$(nproc)"
if [[ -x "$build/kernels_cuda_test" ]]; then
  step cuda_tests 120 "$build/kernels_cuda_test" --gtest_output="xml:$out/kernels_cuda_test.xml"
  step emulated_tests 120 "$build/kernels_cuda_emulated_test" --gtest_brief=1
  if command -v compute-sanitizer >/dev/null; then
    step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$build/kernels_cuda_test" \
      --gtest_filter='Shapes/SpanAttentionCudaTest.*:ElementwiseCudaTest.*' --gtest_brief=1
  fi
  step span_attention_bench 180 "$build/cuda_span_attention_bench" --out "$out/cuda_span_attention.md"
fi
echo
echo "=== summary ($(( $(date +%s) - start )) s)"
printf '%s\n' "${summary[@]}"
[[ -f "$out/cuda_span_attention.md" ]] && cat "$out/cuda_span_attention.md"
exit $status
