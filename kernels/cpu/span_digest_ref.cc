#include "kernels/span_digest.h"

#include <cstring>
#include <vector>

#include <xxhash.h>

namespace kvspan::kernels {

uint64_t SpanDigestRef(const void* data, int64_t size_bytes) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  const int64_t chunks = SpanDigestChunks(size_bytes);
  std::vector<unsigned char> digests(static_cast<size_t>(chunks) * 8);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * kSpanDigestChunkBytes;
    const int64_t n = size_bytes - first < kSpanDigestChunkBytes ? size_bytes - first : kSpanDigestChunkBytes;
    const uint64_t d = XXH3_64bits(bytes + first, static_cast<size_t>(n));
    for (int b = 0; b < 8; ++b) digests[c * 8 + b] = static_cast<unsigned char>(d >> (8 * b));  // little-endian
  }
  return XXH3_64bits(digests.data(), digests.size());
}

}  // namespace kvspan::kernels
