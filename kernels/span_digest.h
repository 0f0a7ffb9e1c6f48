// The span digest: a 64-bit digest of a byte buffer defined so that a GPU computes it in
// parallel (kernels/cuda/span_digest_cuda.h) and the host can recompute it (SpanDigestRef).
// The NCCL span transport sends it over gRPC beside each span's bytes, which travel device
// to device, and the receiver compares it with the digest of what arrived, on its device
// (transport/README.md, "Integrity over NCCL").
//
// Definition (seed 0 everywhere, XXH3-64 as specified by xxHash 0.8's doc/xxhash_spec.md):
//   chunks:  the buffer split into kSpanDigestChunkBytes pieces, the last one shorter
//            (1 .. kSpanDigestChunkBytes bytes); n = 0 bytes has no chunks
//   d_i   =  XXH3-64(chunk i)
//   digest = XXH3-64(d_0 || d_1 || ... || d_{k-1}), each d_i as 8 little-endian bytes
// So the digest of an empty buffer is XXH3-64 of the empty string. The size is not mixed
// in: the transport checks it separately (and a different size changes the chunks).
//
// Thread-safe (pure functions).
#ifndef KVSPAN_KERNELS_SPAN_DIGEST_H_
#define KVSPAN_KERNELS_SPAN_DIGEST_H_

#include <cstdint>

namespace kvspan::kernels {

inline constexpr int64_t kSpanDigestChunkBytes = 4096;

// Number of chunks of a buffer of `size_bytes` (>= 0): ceil(size_bytes / chunk).
inline constexpr int64_t SpanDigestChunks(int64_t size_bytes) {
  return (size_bytes + kSpanDigestChunkBytes - 1) / kSpanDigestChunkBytes;
}

// The digest of host bytes [data, data + size_bytes), with xxHash's own XXH3_64bits: the
// specification the device kernel is tested against. `data` may be null when size_bytes
// is 0.
uint64_t SpanDigestRef(const void* data, int64_t size_bytes);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_SPAN_DIGEST_H_
