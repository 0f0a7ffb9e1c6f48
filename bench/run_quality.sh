#!/bin/bash
# Runs the quality harness of issue 3 from the repo root: quality_bench over every model in
# models/ on the held-out Brown text, then the plot. Writes docs/quality.{csv,md,png}.
#   bench/run_quality.sh [build dir] [extra quality_bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
shift || true
bin="$build/bench/quality_bench"
if [[ ! -x "$bin" ]]; then
  echo "missing $bin: cmake --build $build --target quality_bench" >&2
  exit 1
fi
text="${TMPDIR:-/tmp}/kvspan_brown_valid.txt"
trap 'rm -f "$text"' EXIT
xz -dc tools/corpus/brown_valid.txt.xz > "$text"
"$bin" --text "$text" --out-csv docs/quality.csv --out-md docs/quality.md "$@"
/usr/bin/python3 bench/plot_quality.py docs/quality.csv docs/quality.png
