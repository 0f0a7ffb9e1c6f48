# The source lists of kernels/cuda, shared by kernels/cuda/CMakeLists.txt (the project's
# build) and standalone/CMakeLists.txt (CUDA + GoogleTest + Abseil only, on a GPU machine).
# Paths are relative to the repository root.
#
# "Dual" sources compile with nvcc into the CUDA library and, through their one-line
# *_emulated.cc, with the host compiler into the emulated library (internal/cuda_compat.h),
# where the CPU emulator runs their kernels; their tests are built against both.
set(KVSPAN_CUDA_DUAL_SOURCES
  kernels/cuda/elementwise_cuda.cu
  kernels/cuda/linear_cuda.cu
  kernels/cuda/sampling_cuda.cu
  kernels/cuda/span_attention_cuda.cu
  kernels/cuda/span_codec_cuda.cu
  kernels/cuda/span_digest_cuda.cu
)
set(KVSPAN_CUDA_ONLY_SOURCES
  kernels/cuda/attention_cuda.cu
  kernels/cuda/device_memory.cc
)
set(KVSPAN_CUDA_EMULATED_SOURCES
  kernels/cuda/device_memory_emulated.cc
  kernels/cuda/elementwise_cuda_emulated.cc
  kernels/cuda/internal/cpu_emulator.cc
  kernels/cuda/linear_cuda_emulated.cc
  kernels/cuda/sampling_cuda_emulated.cc
  kernels/cuda/span_attention_cuda_emulated.cc
  kernels/cuda/span_codec_cuda_emulated.cc
  kernels/cuda/span_digest_cuda_emulated.cc
)
# Plain C++ shared by both libraries.
set(KVSPAN_CUDA_PLAN_SOURCES kernels/cuda/internal/span_decode_plan.cc)
set(KVSPAN_CUDA_DUAL_TEST_SOURCES
  kernels/cuda/elementwise_cuda_test.cc
  kernels/cuda/linear_cuda_test.cc
  kernels/cuda/sampling_cuda_test.cc
  kernels/cuda/span_attention_cuda_test.cc
  kernels/cuda/span_codec_cuda_test.cc
  kernels/cuda/span_digest_cuda_test.cc
)
set(KVSPAN_CUDA_ONLY_TEST_SOURCES kernels/cuda/attention_cuda_test.cc)
set(KVSPAN_CUDA_EMULATOR_TEST_SOURCES kernels/cuda/cpu_emulator_test.cc)
# The CPU code the tests compare against (the references and what they call; span_digest_ref.cc
# and span_digest_cuda_test.cc need xxHash), for the standalone build; the project's build links kvspan::kernels instead.
set(KVSPAN_CUDA_REFERENCE_SOURCES
  kernels/cpu/activation.cc
  kernels/cpu/attention_ref.cc
  kernels/cpu/cpu_isa.cc
  kernels/cpu/elementwise_ref.cc
  kernels/cpu/gemm_ref.cc
  kernels/cpu/rms_norm.cc
  kernels/cpu/rope.cc
  kernels/cpu/span_attention.cc
  kernels/cpu/span_attention_avx512.cc
  kernels/cpu/span_attention_ref.cc
  kernels/cpu/span_digest_ref.cc
  kernels/cpu/span_key_dots.cc
  kernels/cpu/weight_matrix.cc
  common/cpu_features.cc
  common/thread_pool.cc
  kvcache/entry_block.cc
  kvcache/internal/block_checks.cc
  kvcache/internal/quantize.cc
  kvcache/span_geometry.cc
  model/sampler.cc
)
set(KVSPAN_CUDA_LISTS KVSPAN_CUDA_DUAL_SOURCES KVSPAN_CUDA_ONLY_SOURCES KVSPAN_CUDA_EMULATED_SOURCES
    KVSPAN_CUDA_PLAN_SOURCES KVSPAN_CUDA_DUAL_TEST_SOURCES KVSPAN_CUDA_ONLY_TEST_SOURCES
    KVSPAN_CUDA_EMULATOR_TEST_SOURCES KVSPAN_CUDA_REFERENCE_SOURCES)
