#include "cachestore/internal/record.h"

#include "absl/strings/str_cat.h"
#include "cachestore/key_scheme.h"

namespace kvspan::cachestore::internal {
namespace {

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLe(absl::string_view in, size_t offset, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[offset + i])) << (8 * i);
  }
  return v;
}

constexpr size_t kEntryMetaBytes = 17;

}  // namespace

std::string EncodeRecordTrailer(uint64_t payload_bytes, uint64_t checksum) {
  std::string out;
  out.reserve(kRecordTrailerBytes);
  PutLe(&out, kRecordMagic, 4);
  PutLe(&out, kRecordVersion, 2);
  PutLe(&out, 0, 2);
  PutLe(&out, payload_bytes, 8);
  PutLe(&out, checksum, 8);
  return out;
}

absl::StatusOr<RecordView> ParseRecord(absl::string_view record) {
  if (record.size() < kRecordTrailerBytes) {
    return absl::DataLossError(absl::StrCat("record is ", record.size(), " bytes, shorter than its trailer"));
  }
  const size_t t = record.size() - kRecordTrailerBytes;  // trailer offset
  if (GetLe(record, t, 4) != kRecordMagic) return absl::DataLossError("record has a bad magic");
  if (GetLe(record, t + 4, 2) != kRecordVersion) {
    return absl::DataLossError(absl::StrCat("record has unknown version ", GetLe(record, t + 4, 2)));
  }
  const uint64_t length = GetLe(record, t + 8, 8);
  if (length != t) {
    return absl::DataLossError(absl::StrCat("record says ", length, " payload bytes but holds ", t));
  }
  RecordView view;
  view.payload = record.substr(0, t);
  view.checksum = GetLe(record, t + 16, 8);
  if (ValueChecksum(view.payload) != view.checksum) {
    return absl::DataLossError("record payload does not match its checksum");
  }
  return view;
}

std::string EncodeEntryMeta(const EntryMeta& meta) {
  std::string out;
  out.reserve(kEntryMetaBytes);
  PutLe(&out, static_cast<uint64_t>(meta.record_bytes), 8);
  PutLe(&out, meta.access_tick, 8);
  PutLe(&out, meta.pinned ? 1 : 0, 1);
  return out;
}

absl::StatusOr<EntryMeta> DecodeEntryMeta(absl::string_view raw) {
  if (raw.size() != kEntryMetaBytes || static_cast<uint8_t>(raw[16]) > 1) {
    return absl::DataLossError("malformed entry metadata");
  }
  EntryMeta meta;
  meta.record_bytes = static_cast<int64_t>(GetLe(raw, 0, 8));
  meta.access_tick = GetLe(raw, 8, 8);
  meta.pinned = raw[16] == 1;
  return meta;
}

}  // namespace kvspan::cachestore::internal
