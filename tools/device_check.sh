#!/bin/bash
# The one prepared GPU check (issue 13). On a lent GPU machine it builds two trees from the
# project's own source lists: kernels/cuda/standalone (CUDA, GoogleTest and Abseil only) and
# gpu/standalone (GpuModel with the CPU kernels, model and kvcache it stands on: also glog,
# gflags, OpenBLAS, xxHash and nlohmann_json), both at once. Then it runs every CUDA test,
# the CPU-emulated kernel tests, compute-sanitizer's memcheck over the span attention tests,
# cuda_span_attention_bench, gpu_model_test, gpu_model_bench (TTFT and decode tokens/s of the
# Llama-3.2-1B and Llama-3.1-8B shapes with random weights) and tools/gpu_torch_peer.py (the
# same in PyTorch eager), writing a log, the tests' XML and the tables under $OUT. Each step
# has its own timeout; the whole is meant to finish in under 8 minutes, so that a session
# can run it once and rerun it once inside its 15 minutes of device time.
#
#   tools/device_check.sh --prepare   # here, with apt: Debian 12's packages as .debs into
#                                     # .devdeps/ (git-ignored; about 16 MB; the tree that
#                                     # travels with them is about 39 MB of the 64 MiB)
#                                     # and the commit they go with (.devdeps/commit:
#                                     # run it after committing)
#   tools/device_check.sh             # there: the device tool's run, carry [".devdeps"],
#                                     # timeout_s 600; $OUT gets device_check.log,
#                                     # kernels_cuda_test.xml, gpu_model_test.xml,
#                                     # cuda_span_attention.md, gpu_model.md, gpu_torch.md
#   PATH=/usr/local/cuda/bin:$PATH OUT=/tmp/devout KVSPAN_BUILD_JOBS=1 KVSPAN_TIMEOUT_SCALE=4 \
#     nice tools/device_check.sh      # a rehearsal here: the CUDA tests skip and the
#                                     # benchmarks fail for want of a device; all else passes
#                                     # (jobs per tree, default nproc; timeouts x the scale)
#
# The device machine has CMake, ninja, nvcc, a host compiler and python3 with torch but no
# package registry: the .debs are unpacked with dpkg -x into /tmp (never into /) and
# gpu/standalone looks for its dependencies there only (KVSPAN_DEPS_ROOT). The tables are
# written as docs/performance.md sections (gpu_model_bench, gpu_torch_peer): paste them there.
# Exit status: 0 when every step passed; the summary at the end names each step's result.
set -uo pipefail
cd "$(dirname "$0")/.."
readonly deps_dir=.devdeps
readonly packages=(
  libgtest-dev libgmock-dev libabsl-dev libabsl20220623                   # both trees
  libgoogle-glog-dev libgoogle-glog0v6 libgflags-dev libgflags2.2 libunwind8  # gpu/standalone
  libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
  libxxhash-dev libxxhash0 nlohmann-json3-dev
)

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$deps_dir"
  (cd "$deps_dir" && rm -f ./*.deb && apt-get download "${packages[@]}") || exit 1
  git describe --always --dirty > "$deps_dir/commit" 2>/dev/null || echo unknown > "$deps_dir/commit"
  ls -la "$deps_dir"
  du -sh "$deps_dir"
  exit 0
fi

out="${OUT:-/tmp/kvspan-device-out}"
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
start=$(date +%s)
declare -a summary=()
status=0
record() {  # record NAME RC SECONDS
  if [[ $2 -eq 0 ]]; then summary+=("PASS $1 ($3 s)"); else summary+=("FAIL $1: exit $2 ($3 s)"); status=1; fi
}
readonly scale="${KVSPAN_TIMEOUT_SCALE:-1}"
step() {  # step NAME TIMEOUT_S COMMAND...: runs it, records pass/fail and its seconds
  local name=$1 limit=$(( $2 * scale ))
  shift 2
  local t0=$(date +%s)
  echo "=== $name"
  timeout "$limit" "$@"
  local rc=$?
  record "$name" $rc $(( $(date +%s) - t0 ))
  return $rc
}

commit=$(git describe --always --dirty 2>/dev/null || cat "$deps_dir/commit" 2>/dev/null || echo unknown)
export KVSPAN_COMMIT="$commit"
echo "kvspan device check, $(date -u +%FT%TZ), commit $commit"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
nvcc --version | tail -2 || true
echo "host compiler: $(c++ --version 2>/dev/null | head -1); cmake $(cmake --version | head -1); $(python3 --version 2>&1)"

sysroot=/tmp/kvspan-devdeps
rm -rf "$sysroot" && mkdir -p "$sysroot"
for f in "$deps_dir"/*.deb; do
  [[ -f "$f" ]] || { echo "no .deb in $deps_dir: run tools/device_check.sh --prepare here and carry $deps_dir"; exit 1; }
  dpkg -x "$f" "$sysroot"
done
lib="$sysroot/usr/lib/x86_64-linux-gnu"
readonly original_ld_path="${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
kbuild=/tmp/kvspan-cuda
gbuild=/tmp/kvspan-gpu
jobs="${KVSPAN_BUILD_JOBS:-$(nproc)}"

# Configure both, then build both at once (the .cu files are each tree's longest compiles).
step configure 120 cmake -S kernels/cuda/standalone -B "$kbuild" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$sysroot/usr" -Dabsl_DIR="$lib/cmake/absl" \
  -DGTest_DIR="$lib/cmake/GTest"
kconfigured=$?
# NCCL for nccl_channel_test: the toolkit's, else the nvidia-nccl wheel's (torch's).
export KVSPAN_NCCL_ROOT="${KVSPAN_NCCL_ROOT:-$(python3 -c 'import importlib.util as u; print(u.find_spec("nvidia.nccl").submodule_search_locations[0])' 2>/dev/null)}"
step gpu_configure 120 cmake -S gpu/standalone -B "$gbuild" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DKVSPAN_DEPS_ROOT="$sysroot"
gconfigured=$?
gpid=
if [[ $gconfigured -eq 0 ]]; then
  gt0=$(date +%s)
  timeout $(( 360 * scale )) cmake --build "$gbuild" -j "$jobs" > /tmp/kvspan-gpu-build.log 2>&1 &
  gpid=$!
fi
[[ $kconfigured -eq 0 ]] && step build 360 cmake --build "$kbuild" -j "$jobs"
if [[ -n "$gpid" ]]; then
  echo "=== gpu_build"
  wait "$gpid"
  grc=$?
  tail -n 40 /tmp/kvspan-gpu-build.log
  record gpu_build $grc $(( $(date +%s) - gt0 ))
  echo "=== libraries gpu_model_bench loads"
  ldd "$gbuild/gpu_model_bench" 2>&1 | grep -E "glog|gflags|unwind|openblas|gfortran|xxhash|cublas|cudart" || true
  # Every dependency header the gpu tree compiled came from the unpacked packages, none from
  # /usr/include (what a rehearsal on a machine with them installed too must show).
  echo "=== headers_from_sysroot"
  ht0=$(date +%s)
  deps=$(cmake --build "$gbuild" -- -t deps)
  hrc=$?
  if [[ $hrc -eq 0 ]] && ! grep -q "^ *$sysroot/usr/include/glog/logging.h" <<< "$deps"; then
    echo "glog/logging.h was not compiled from $sysroot"
    hrc=2
  fi
  if [[ $hrc -eq 0 ]] && grep -m 5 -E \
      '^ +/usr/include/(absl|gflags|glog|gmock|gtest|nlohmann|xxh|x86_64-linux-gnu/openblas)' <<< "$deps"; then
    hrc=3
  fi
  record headers_from_sysroot $hrc $(( $(date +%s) - ht0 ))
fi

if [[ -x "$kbuild/kernels_cuda_test" ]]; then
  step cuda_tests 120 "$kbuild/kernels_cuda_test" --gtest_output="xml:$out/kernels_cuda_test.xml"
  step emulated_tests 120 "$kbuild/kernels_cuda_emulated_test" --gtest_brief=1
  if command -v compute-sanitizer >/dev/null; then
    step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$kbuild/kernels_cuda_test" \
      --gtest_filter='Shapes/SpanAttentionCudaTest.*:ElementwiseCudaTest.*:RandomUniformBf16CudaTest.*' --gtest_brief=1
  fi
  step span_attention_bench 180 "$kbuild/cuda_span_attention_bench" --out "$out/cuda_span_attention.md"
fi
if [[ -x "$gbuild/gpu_model_test" ]]; then
  step gpu_model_test 180 "$gbuild/gpu_model_test" --gtest_output="xml:$out/gpu_model_test.xml" --gtest_brief=1
  if [[ -x "$gbuild/nccl_channel_test" ]]; then
    step nccl_channel_test 60 env LD_LIBRARY_PATH="${KVSPAN_NCCL_ROOT:+$KVSPAN_NCCL_ROOT/lib:}$LD_LIBRARY_PATH" \
      "$gbuild/nccl_channel_test" --gtest_output="xml:$out/nccl_channel_test.xml" --gtest_brief=1
  fi
  step gpu_model_bench 240 "$gbuild/gpu_model_bench" --shapes 1b,8b --batches 1,32 --prompt-tokens 512 \
    --steps 64 --out "$out/gpu_model.md"
fi
step torch_peer 240 env LD_LIBRARY_PATH="$original_ld_path" PYTHONUNBUFFERED=1 python3 tools/gpu_torch_peer.py \
  --shapes 1b,8b --batches 1,32 --prompt-tokens 512 --steps 64 --out "$out/gpu_torch.md" \
  --kvspan-table "$out/gpu_model.md"
echo
echo "=== summary ($(( $(date +%s) - start )) s)"
printf '%s\n' "${summary[@]}"
for table in cuda_span_attention gpu_model gpu_torch; do
  [[ -f "$out/$table.md" ]] && cat "$out/$table.md"
done
exit $status
