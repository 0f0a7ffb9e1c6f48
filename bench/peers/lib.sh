# Shared by bench/peers/run_peers.sh and compare_outputs.sh (sourced, not run): the GGUF files
# of a checkpoint, made once and reused while newer than their sources.
#
# REQUIRES: $dir (the llama.cpp directory of build_llama_cpp.sh), $py (/usr/bin/python3), the
# caller's cwd at the repository root and a die() function.

# peers_gguf MODEL_DIR TYPE: prints the path of MODEL_DIR's GGUF file of TYPE (f32, bf16: by
# kvspan_to_gguf.py; q8_0, q4_0: by llama-quantize from the f32 one, its default recipe),
# making it first when missing or older than what it is made from.
peers_gguf() {
  local model="$1" type="$2"
  local g="$dir/gguf/$(basename "$model")-$type.gguf"
  mkdir -p "$dir/gguf"
  case "$type" in
    f32|bf16)
      if [[ ! -f "$g" || "$model/model.safetensors" -nt "$g" || bench/peers/kvspan_to_gguf.py -nt "$g" ]]; then
        nice "$py" bench/peers/kvspan_to_gguf.py --model "$model" --outtype "$type" --out "$g.partial" \
          --gguf-py "$dir/llama.cpp/gguf-py" >&2 || die "converting $model to $type failed"
        mv "$g.partial" "$g"
      fi ;;
    q8_0|q4_0)
      local src
      src=$(peers_gguf "$model" f32)
      if [[ ! -f "$g" || "$src" -nt "$g" ]]; then
        nice "$dir/build/bin/llama-quantize" "$src" "$g.partial" "${type^^}" 2 > "$g.log" 2>&1 \
          || die "llama-quantize $type failed; see $g.log"
        mv "$g.partial" "$g"
      fi ;;
    *) die "peers_gguf: unknown type $type" ;;
  esac
  echo "$g"
}
