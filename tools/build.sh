#!/usr/bin/env bash
# Configures and builds kvspan (preset "default": RelWithDebInfo, Ninja, ccache, build/).
# Usage: tools/build.sh [extra cmake --build args]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc)" "$@"
