// SpanKey: the 16-byte key of one cached span (an XXH3-128 digest in canonical,
// big-endian byte order; see docs/key-scheme.md). A value type; thread-compatible.
#ifndef KVSPAN_CACHESTORE_SPAN_KEY_H_
#define KVSPAN_CACHESTORE_SPAN_KEY_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvspan::cachestore {

struct SpanKey {
  static constexpr size_t kSize = 16;
  std::array<uint8_t, kSize> bytes{};

  // Parses 16 raw bytes. InvalidArgument (naming `what`) if `raw` is not 16 bytes long.
  static absl::StatusOr<SpanKey> FromBytes(absl::string_view raw, absl::string_view what = "key");
  // Parses 32 lowercase or uppercase hex digits. InvalidArgument otherwise.
  static absl::StatusOr<SpanKey> FromHex(absl::string_view hex);

  // The 16 raw bytes as a string (what RocksDB and the wire carry).
  std::string ToBytes() const { return std::string(reinterpret_cast<const char*>(bytes.data()), kSize); }
  absl::string_view AsStringView() const {
    return absl::string_view(reinterpret_cast<const char*>(bytes.data()), kSize);
  }
  // 32 lowercase hex digits.
  std::string ToHex() const;
  bool IsZero() const;

  friend bool operator==(const SpanKey& a, const SpanKey& b) { return a.bytes == b.bytes; }
  friend bool operator!=(const SpanKey& a, const SpanKey& b) { return !(a == b); }
  friend bool operator<(const SpanKey& a, const SpanKey& b) { return a.bytes < b.bytes; }
  template <typename H>
  friend H AbslHashValue(H h, const SpanKey& k) {
    return H::combine_contiguous(std::move(h), k.bytes.data(), kSize);
  }
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_SPAN_KEY_H_
