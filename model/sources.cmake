# The source lists of kvspan::tokenizer, kvspan::model and kvspan::sampler, shared by model/CMakeLists.txt
# and gpu/standalone (cmake/KvspanSources.cmake). Paths are relative to the repository root.
set(KVSPAN_TOKENIZER_SOURCES
  model/tokenizer.cc
  model/tokenizer_encode.cc
  model/token_decoder.cc
  model/internal/bpe.cc
  model/internal/byte_level.cc
  model/internal/nfc.cc
  model/internal/pretokenize.cc
  model/internal/tokenizer_config.cc
  model/internal/tokenizer_spec.cc
  model/internal/unicode.cc
  model/internal/unicode_tables.cc
)
set(KVSPAN_MODEL_SOURCES
  model/config.cc
  model/kv_cache.cc
  model/model.cc
  model/pending_tokens.cc
  model/safetensors.cc
  model/internal/weights.cc
)
set(KVSPAN_SAMPLER_SOURCES
  model/sampler.cc
)
set(KVSPAN_MODEL_LISTS KVSPAN_TOKENIZER_SOURCES KVSPAN_MODEL_SOURCES KVSPAN_SAMPLER_SOURCES)
