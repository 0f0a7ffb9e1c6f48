#include "kernels/cuda/span_digest_cuda.h"

#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/internal/cuda_compat.h"
#include "kernels/cuda/internal/xxh3.cuh"

namespace kvspan::kernels {
namespace internal {
namespace {

constexpr int kDigestThreads = 128;

// Thread c of the grid: chunk c's XXH3-64.
KVSPAN_GLOBAL(kDigestThreads) ChunkDigestKernel(SpanDigestCudaParams p) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const int64_t first = c * kSpanDigestChunkBytes;
  if (first >= p.size_bytes) return;
  const int64_t left = p.size_bytes - first;
  const int64_t n = left < kSpanDigestChunkBytes ? left : kSpanDigestChunkBytes;
  p.chunk_digests[c] = Xxh3_64(p.data + first, static_cast<uint64_t>(n));
}

// One thread: XXH3-64 of `size_bytes` bytes (the chunk digests are little-endian u64s in
// device memory, on every GPU and on the emulator's x86 host).
KVSPAN_GLOBAL(1) Xxh3Kernel(const uint8_t* data, int64_t size_bytes, uint64_t* out) {
  *out = Xxh3_64(data, static_cast<uint64_t>(size_bytes));
}

}  // namespace
}  // namespace internal

absl::Status SpanDigestCuda(const SpanDigestCudaParams& p, void* stream) {
  const int64_t chunks = p.size_bytes >= 0 ? SpanDigestChunks(p.size_bytes) : 0;
  if (p.size_bytes < 0 || p.digest == nullptr || (chunks > 0 && (p.data == nullptr || p.chunk_digests == nullptr))) {
    return absl::InvalidArgumentError("SpanDigestCuda: negative size or null pointer");
  }
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  if (chunks > 0) {
    const internal::LaunchShape s{
        dim3(static_cast<unsigned>((chunks + internal::kDigestThreads - 1) / internal::kDigestThreads)),
        dim3(internal::kDigestThreads)};
    KVSPAN_LAUNCH(internal::ChunkDigestKernel, s, stream, p);
    RETURN_IF_ERROR(internal::KvspanLaunchStatus("SpanDigestCuda chunk launch"));
  }
  const internal::LaunchShape one{dim3(1), dim3(1)};
  KVSPAN_LAUNCH(internal::Xxh3Kernel, one, stream, reinterpret_cast<const uint8_t*>(p.chunk_digests), chunks * 8,
                p.digest);
  return internal::KvspanLaunchStatus("SpanDigestCuda combine launch");
}

absl::Status Xxh3Cuda(const uint8_t* data, int64_t size_bytes, uint64_t* out, void* stream) {
  if (size_bytes < 0 || out == nullptr || (size_bytes > 0 && data == nullptr)) {
    return absl::InvalidArgumentError("Xxh3Cuda: negative size or null pointer");
  }
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  const internal::LaunchShape one{dim3(1), dim3(1)};
  KVSPAN_LAUNCH(internal::Xxh3Kernel, one, stream, data, size_bytes, out);
  return internal::KvspanLaunchStatus("Xxh3Cuda launch");
}

}  // namespace kvspan::kernels
