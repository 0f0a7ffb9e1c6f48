# The source lists of kvspan::kvcache (the span format, codecs, policies) and
# kvspan::kvcache_runtime (the caches over them), shared by kvcache/CMakeLists.txt and
# gpu/standalone (cmake/KvspanSources.cmake). Paths are relative to the repository root.
set(KVSPAN_KVCACHE_SOURCES
  kvcache/span_geometry.cc
  kvcache/entry_block.cc
  kvcache/span.cc
  kvcache/span_format.cc
  kvcache/internal/block_checks.cc
  kvcache/internal/quantize.cc
  kvcache/policy.cc
  kvcache/internal/policy_table.cc
  kvcache/compress.cc
  kvcache/sharing.cc
  kvcache/reducers/entries.cc
  kvcache/reducers/sinks_window.cc
  kvcache/reducers/key_norm.cc
  kvcache/reducers/kvmerger.cc
  kvcache/reducers/razor.cc
  kvcache/reducers/sentinel_analogue.cc
  kvcache/reducers/mikv.cc
  kvcache/reducers/snapkv.cc
  kvcache/reducers/expected_attention.cc
)
set(KVSPAN_KVCACHE_RUNTIME_SOURCES
  kvcache/compressed_kv_cache.cc
  kvcache/span_compressor.cc
  kvcache/span_kernel_views.cc
  kvcache/sentinel.cc
  kvcache/razor_probe_cache.cc
  kvcache/razor_calibration.cc
  kvcache/cache_policy.cc
)
set(KVSPAN_KVCACHE_LISTS KVSPAN_KVCACHE_SOURCES KVSPAN_KVCACHE_RUNTIME_SOURCES)
