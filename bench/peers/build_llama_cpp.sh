#!/bin/bash
# Builds the peer, llama.cpp, from the source that the npm package node-llama-cpp 3.22.1 ships
# (llama/gitRelease.bundle: llama.cpp tag v0.5.0, commit de3ff815), outside this repository,
# and compiles bench/peers/llama_ids.cc against it. Idempotent: each step is skipped when its
# output is already there, so a second run costs seconds.
#
#   bench/peers/build_llama_cpp.sh [--dir DIR] [--jobs N] [--amx auto|on|off]
#
# DIR (default $KVSPAN_PEERS_DIR, else /tmp/kvspan-peers) receives:
#   node-llama-cpp-3.22.1.tgz   the npm tarball, checked against the registry's sha512 integrity
#   llama.cpp/                  the source, cloned from the bundle at the pinned commit
#   build/                      CMake build: build/bin/{llama-bench,llama-quantize,libllama.so,...}
#   llama_ids                   bench/peers/llama_ids.cc linked against build/bin/libllama.so
# Nothing of llama.cpp is ever written into this repository.
#
# Build: Release, GGML_NATIVE=ON (-march=native), CPU backend only (no CUDA/Vulkan/Metal), and
# AMX compiled in when the compiler accepts -mamx-tile/-mamx-int8/-mamx-bf16 (--amx auto):
# ggml picks its AMX kernels at run time only where the kernel grants tile state (a CPU
# without AMX, such as Zen 4, prints "AMX is not ready to be used!" and runs AVX-512). With
# AMX compiled in, bench/peers/llama_cpp_amx_ldtilecfg.patch is applied first: GCC 12's
# _tile_loadconfig drops the tile-configuration stores at -O3 (SIGILL; ../shared/PLATFORM.md).
set -euo pipefail

readonly kNpmPackage="node-llama-cpp@3.22.1"
readonly kNpmTarball="node-llama-cpp-3.22.1.tgz"
# `npm view node-llama-cpp@3.22.1 dist.integrity dist.shasum`
readonly kNpmIntegrity="sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw=="
readonly kNpmShasum="e908932762f21939024263d58f1d6dc3e88b23e6"
# package/llama/llama.cpp.info.json says {"tag": "v0.5.0", "llamaCppGithubRepo": "ggml-org/llama.cpp"};
# the bundle's single head (one squashed commit dated 2026-09-28):
readonly kLlamaCppTag="v0.5.0"
readonly kLlamaCppCommit="de3ff815ea7d559ee917f063901b8986f038abc6"
readonly kTargets=(llama llama-bench llama-quantize)

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
die() { echo "build_llama_cpp.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir="${KVSPAN_PEERS_DIR:-/tmp/kvspan-peers}"
jobs=2
amx=auto
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a value}"; shift 2 ;;
    --amx) amx="${2:?--amx needs a value}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ "$amx" =~ ^(auto|on|off)$ ]] || die "--amx must be auto, on or off (got '$amx')"
for tool in npm git cmake openssl c++; do
  command -v "$tool" >/dev/null || die "needs $tool on PATH"
done
case "$dir" in "$repo"|"$repo"/*) die "--dir $dir is inside the repository; llama.cpp must stay outside it" ;; esac
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
src="$dir/llama.cpp"
build="$dir/build"

# 1. The npm tarball, integrity checked (a tarball already there is checked again).
if [[ ! -f "$dir/$kNpmTarball" ]]; then
  echo "== npm pack $kNpmPackage" >&2
  (cd "$dir" && npm pack --silent "$kNpmPackage" >/dev/null) || die "npm pack $kNpmPackage failed"
fi
integrity="sha512-$(openssl dgst -sha512 -binary "$dir/$kNpmTarball" | openssl base64 -A)"
shasum=$(sha1sum "$dir/$kNpmTarball" | cut -d' ' -f1)
if [[ "$integrity" != "$kNpmIntegrity" || "$shasum" != "$kNpmShasum" ]]; then
  die "$dir/$kNpmTarball: integrity $integrity / sha1 $shasum, expected $kNpmIntegrity / $kNpmShasum (delete it to fetch again)"
fi

# 2. The source: the bundle inside the tarball, cloned at the pinned commit.
if [[ ! -d "$src/.git" ]]; then
  echo "== llama.cpp $kLlamaCppTag ($kLlamaCppCommit) from the bundle" >&2
  tmp=$(mktemp -d "$dir/unpack.XXXXXX")
  tar -xzf "$dir/$kNpmTarball" -C "$tmp" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
  grep -q "\"tag\": \"$kLlamaCppTag\"" "$tmp/package/llama/llama.cpp.info.json" \
    || die "the package's llama.cpp.info.json does not name tag $kLlamaCppTag"
  head=$(git bundle list-heads "$tmp/package/llama/gitRelease.bundle" | awk '$2 == "HEAD" {print $1}')
  [[ "$head" == "$kLlamaCppCommit" ]] || die "the bundle's HEAD is $head, expected $kLlamaCppCommit"
  git clone --quiet --no-checkout "$tmp/package/llama/gitRelease.bundle" "$src.partial"
  git -C "$src.partial" -c advice.detachedHead=false checkout --quiet "$kLlamaCppCommit"
  mv "$src.partial" "$src"
  rm -rf "$tmp"
fi
[[ "$(git -C "$src" rev-parse HEAD)" == "$kLlamaCppCommit" ]] || die "$src is not at $kLlamaCppCommit"

# 3. AMX: compiled in when asked (on) or when the compiler takes the flags (auto).
amx_flags=""
if [[ "$amx" != off ]]; then
  if echo 'int main(void) { return 0; }' | c++ -x c++ -march=native -mamx-tile -mamx-int8 -mamx-bf16 - -o /dev/null 2>/dev/null; then
    amx_flags="-mamx-tile -mamx-int8 -mamx-bf16"
  elif [[ "$amx" == on ]]; then
    die "--amx on: the compiler rejects -mamx-tile -mamx-int8 -mamx-bf16"
  fi
fi
patch="$repo/bench/peers/llama_cpp_amx_ldtilecfg.patch"
if [[ -n "$amx_flags" ]]; then
  if git -C "$src" apply --check "$patch" 2>/dev/null; then
    echo "== applying $(basename "$patch")" >&2
    git -C "$src" apply "$patch"
  elif ! git -C "$src" apply --check --reverse "$patch" 2>/dev/null; then
    die "$patch applies neither forwards nor backwards to $src"
  fi
elif git -C "$src" apply --check --reverse "$patch" 2>/dev/null; then
  git -C "$src" apply --reverse "$patch"  # a build without AMX runs the source as shipped
fi

# 4. Configure (CMake skips what has not changed) and build the targets needed.
echo "== cmake configure ($build; AMX flags: ${amx_flags:-none})" >&2
generator=()
command -v ninja >/dev/null && [[ ! -f "$build/CMakeCache.txt" ]] && generator=(-G Ninja)
cmake -S "$src" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
  -DGGML_OPENCL=OFF -DGGML_RPC=OFF -DGGML_BLAS=OFF -DGGML_BACKEND_DL=OFF \
  -DCMAKE_C_FLAGS="$amx_flags" -DCMAKE_CXX_FLAGS="$amx_flags" \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF >"$dir/cmake-configure.log" 2>&1 \
  || die "cmake configure failed; see $dir/cmake-configure.log"
echo "== cmake --build (${kTargets[*]}, -j$jobs, nice 15)" >&2
nice -n 15 cmake --build "$build" -j "$jobs" --target "${kTargets[@]}" \
  || die "cmake --build failed"

# 5. bench/peers/llama_ids.cc against the built libllama.
lib=$(find "$build" -name 'libllama.so' -print -quit)
[[ -n "$lib" ]] || die "no libllama.so under $build"
libdir=$(dirname "$lib")
if [[ ! -x "$dir/llama_ids" || "$repo/bench/peers/llama_ids.cc" -nt "$dir/llama_ids" ||
      "$repo/bench/peers/ids_io.h" -nt "$dir/llama_ids" || "$lib" -nt "$dir/llama_ids" ]]; then
  echo "== c++ bench/peers/llama_ids.cc" >&2
  nice -n 15 c++ -std=c++17 -O2 -Wall -I"$repo" -I"$src/include" -I"$src/ggml/include" \
    "$repo/bench/peers/llama_ids.cc" -o "$dir/llama_ids" \
    -L"$libdir" -Wl,-rpath,"$libdir" -lllama -lggml -lggml-base \
    || die "compiling llama_ids.cc failed"
fi
echo "llama.cpp $kLlamaCppTag ($kLlamaCppCommit) built in $build; bin: $build/bin; llama_ids: $dir/llama_ids" >&2
