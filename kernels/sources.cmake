# The source list of kvspan::kernels (the CPU kernels), shared by kernels/CMakeLists.txt and
# gpu/standalone (cmake/KvspanSources.cmake). Paths are relative to the repository root.
# kernels/cuda has its own (kernels/cuda/sources.cmake).
set(KVSPAN_KERNELS_SOURCES
  kernels/cpu/activation.cc
  kernels/cpu/attention.cc
  kernels/cpu/attention_ref.cc
  kernels/cpu/blas_select.cc
  kernels/cpu/cpu_isa.cc
  kernels/cpu/elementwise_ref.cc
  kernels/cpu/gemm.cc
  kernels/cpu/gemm_amx.cc
  kernels/cpu/gemm_panels_avx512.cc
  kernels/cpu/gemm_ref.cc
  kernels/cpu/gemm_tiled_avx2.cc
  kernels/cpu/gemm_tiled_avx512.cc
  kernels/cpu/rms_norm.cc
  kernels/cpu/rope.cc
  kernels/cpu/span_attention.cc
  kernels/cpu/span_key_dots.cc
  kernels/cpu/span_attention_avx512.cc
  kernels/cpu/span_attention_ref.cc
  kernels/cpu/span_digest_ref.cc
  kernels/cpu/weight_matrix.cc
)
set(KVSPAN_KERNELS_LISTS KVSPAN_KERNELS_SOURCES)
