// The store's own envelope around every value, so that it can verify a value on Get
// without knowing the span format (docs/cachestore.md, "Record format"): the payload,
// then a 24-byte trailer (at the end, so that a record read into a string becomes the
// value by truncation, without moving the payload):
//   offset n      payload (n bytes)
//   offset n+0    u32 LE magic 0x4353564b ("KVSC")
//   offset n+4    u16 LE format version (1)
//   offset n+6    u16 LE flags (0)
//   offset n+8    u64 LE payload length n
//   offset n+16   u64 LE XXH3-64 of the payload
// Thread-safe (pure functions).
#ifndef KVSPAN_CACHESTORE_INTERNAL_RECORD_H_
#define KVSPAN_CACHESTORE_INTERNAL_RECORD_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvspan::cachestore::internal {

inline constexpr uint32_t kRecordMagic = 0x4353564b;
inline constexpr uint16_t kRecordVersion = 1;
inline constexpr size_t kRecordTrailerBytes = 24;

// The 24 trailer bytes for a payload of `payload_bytes` with checksum `checksum`.
std::string EncodeRecordTrailer(uint64_t payload_bytes, uint64_t checksum);

struct RecordView {
  absl::string_view payload;  // borrows from the record passed to ParseRecord
  uint64_t checksum = 0;
};

// Parses and verifies a record: DataLoss if it is shorter than its trailer, has a bad
// magic, an unknown version, a length that disagrees with its size, or a checksum that
// does not match. The payload is record[0, payload.size()).
absl::StatusOr<RecordView> ParseRecord(absl::string_view record);

// Metadata kept per entry in the "meta" column family (docs/cachestore.md):
//   u64 LE record size, u64 LE last access tick, u8 pinned (0/1).
struct EntryMeta {
  int64_t record_bytes = 0;
  uint64_t access_tick = 0;
  bool pinned = false;
};
std::string EncodeEntryMeta(const EntryMeta& meta);
// DataLoss if `raw` is not a well-formed EntryMeta.
absl::StatusOr<EntryMeta> DecodeEntryMeta(absl::string_view raw);

}  // namespace kvspan::cachestore::internal

#endif  // KVSPAN_CACHESTORE_INTERNAL_RECORD_H_
