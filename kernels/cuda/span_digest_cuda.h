// The span digest (kernels/span_digest.h) of device bytes, on the GPU: one thread per
// 4 KiB chunk hashes it with XXH3-64 (internal/xxh3.cuh, our own device code), then one
// thread hashes the chunk digests. A span of S MB has 256·S chunks, so the first launch
// runs 256·S threads in blocks of 128; the second reads 8 bytes per chunk (2 KB for 1 MB
// of span). What comes back to the host is the 8-byte result, when the caller copies it.
//
// Contract: *digest = SpanDigestRef(data, size_bytes) bit for bit (tested in the CPU
// emulator everywhere and on the GPU where there is one, span_digest_cuda_test.cc), and
// Xxh3Cuda's *out = XXH3_64bits(data, size_bytes). Device pointers, enqueued on `stream`
// (a cudaStream_t; null = the default stream); nothing waits.
//
// Errors: InvalidArgument for a negative size or a null pointer (checked on the host
// first); Unavailable without a device; Internal for a launch error. Thread-safe.
// This header never includes CUDA headers (STYLE.md).
#ifndef KVSPAN_KERNELS_CUDA_SPAN_DIGEST_CUDA_H_
#define KVSPAN_KERNELS_CUDA_SPAN_DIGEST_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/span_digest.h"

namespace kvspan::kernels {

struct SpanDigestCudaParams {
  const uint8_t* data = nullptr;      // [size_bytes] device bytes; may be null when size_bytes is 0
  int64_t size_bytes = 0;             // >= 0
  uint64_t* chunk_digests = nullptr;  // [SpanDigestChunks(size_bytes)] device scratch; may be null with no chunks
  uint64_t* digest = nullptr;         // [1] device: the result
};

absl::Status SpanDigestCuda(const SpanDigestCudaParams& p, void* stream);

// XXH3-64 (seed 0) of a whole device buffer by one device thread: the function the digest
// is built from, exposed so that it is tested against xxHash on every length class.
// `data` may be null when size_bytes is 0; `out` is [1] on the device.
absl::Status Xxh3Cuda(const uint8_t* data, int64_t size_bytes, uint64_t* out, void* stream);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_SPAN_DIGEST_CUDA_H_
