# The source lists of gpu/, shared by gpu/CMakeLists.txt and gpu/standalone
# (cmake/KvspanSources.cmake). Paths are relative to the repository root. The standalone
# build has no decode/ (it would need the cache store's gRPC and RocksDB), so the decode
# worker's backend is a list of its own.
set(KVSPAN_GPU_MODEL_SOURCES
  gpu/gpu_kv_cache.cc
  gpu/gpu_model.cc
)
set(KVSPAN_GPU_BACKEND_SOURCES gpu/gpu_backend.cc)
set(KVSPAN_GPU_TEST_SOURCES gpu/gpu_model_test.cc)
# The device span link of the NCCL span transport (device_span_link.h) and its channels:
# NCCL (CUDA builds with NCCL) and the loopback stand-in (emulated builds only).
set(KVSPAN_GPU_LINK_SOURCES gpu/device_span_link.cc)
set(KVSPAN_GPU_NCCL_SOURCES gpu/nccl_channel.cc)
set(KVSPAN_GPU_LOOPBACK_SOURCES gpu/loopback_channel.cc)
set(KVSPAN_GPU_NCCL_TEST_SOURCES gpu/nccl_channel_test.cc)
set(KVSPAN_GPU_LISTS KVSPAN_GPU_MODEL_SOURCES KVSPAN_GPU_BACKEND_SOURCES KVSPAN_GPU_TEST_SOURCES
    KVSPAN_GPU_LINK_SOURCES KVSPAN_GPU_NCCL_SOURCES KVSPAN_GPU_LOOPBACK_SOURCES KVSPAN_GPU_NCCL_TEST_SOURCES)
