# The source lists of bench/ that gpu/standalone builds too (cmake/KvspanSources.cmake).
# Paths are relative to the repository root.
set(KVSPAN_BENCH_UTIL_SOURCES
  bench/doc_section.cc
  bench/text_windows.cc
)
set(KVSPAN_GPU_MODEL_BENCH_SOURCES bench/gpu_model_bench.cc)
set(KVSPAN_BENCH_LISTS KVSPAN_BENCH_UTIL_SOURCES KVSPAN_GPU_MODEL_BENCH_SOURCES)
