// The serialized span: versioned, self-describing, checksummed bytes shipped between
// workers and stored in the cache store. docs/span-format.md is the specification (byte
// layout, size formula, validation rules, version rule, a worked example).
//
// All functions are pure and thread-safe.
#ifndef KVSPAN_KVCACHE_SPAN_FORMAT_H_
#define KVSPAN_KVCACHE_SPAN_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvcache/span.h"

namespace kvspan::kvcache {

inline constexpr char kSpanMagic[4] = {'K', 'V', 'S', 'P'};
inline constexpr uint16_t kSpanVersionMajor = 1;
// Minor 1 added shared blocks (block flag kBlockShared). Writers write minor 0 for a span
// without shared blocks (byte-identical to version 1.0), 1 otherwise; readers read both.
inline constexpr uint16_t kSpanVersionMinor = 1;
inline constexpr uint16_t kSpanVersionMinorShared = 1;
// Fixed-size part of the header (magic .. span_index), before the two strings.
inline constexpr int64_t kSpanFixedHeaderBytes = 32;
inline constexpr int64_t kSpanChecksumBytes = 8;

// Head record kinds (a format enum: never renumber).
inline constexpr uint8_t kHeadKindOwned = 0;
inline constexpr uint8_t kHeadKindShared = 1;

// Block flags (a format enum). Set exactly when the array they replace is redundant (the
// canonical form: a reader rejects a block that stores a redundant array explicitly).
inline constexpr uint8_t kBlockImplicitPositions = 0x01;  // positions = first_position + i
inline constexpr uint8_t kBlockZeroLogCounts = 0x02;      // every log count is +0.0
// Since minor 1: a shared block record (codec byte 0, bits 0-1 clear; docs/span-format.md).
inline constexpr uint8_t kBlockShared = 0x04;
inline constexpr uint8_t kBlockSharesValues = 0x08;    // shares == kKeysAndValues
inline constexpr uint8_t kBlockKeyScales = 0x10;       // key_scales stored (not all 1)
inline constexpr uint8_t kBlockValueScales = 0x20;     // value_scales stored (not all 1)
// The codec byte of a shared block record: the codec is the source block's.
inline constexpr uint8_t kSharedBlockCodecByte = 0;
// XXH3-64 (seed 0) of `body`: the checksum stored in a span's last 8 bytes, computed over
// every byte before it.
uint64_t SpanChecksum(absl::string_view body);

// The serialized form of `span`. REQUIRES: ValidateSpan(span).ok() (an invalid span
// serializes to bytes that ParseSpan rejects).
std::string SerializeSpan(const Span& span);

// Exact size of SerializeSpan(span), from the size formula of docs/span-format.md,
// without serializing. REQUIRES: ValidateSpan(span).ok().
int64_t SerializedSize(const Span& span);

// SerializedSize(span) / span_tokens: stored bytes per token, headers included (compare
// with a bf16 span of the same geometry for a compression ratio).
double BytesPerToken(const Span& span);

// Parses and validates `bytes` (borrowed for the call; the Span owns copies).
//   DataLoss: truncated input, checksum mismatch, bad magic, any length or count that
//     does not fit the remaining bytes or the geometry, unknown codec, head kind or block
//     flag of the reader's own minor version, a non-canonical block, trailing bytes, a
//     shared block in a minor-0 span or with a bad source (not an earlier layer, not an
//     owned block at the same index, a chain), or a violated Span invariant.
//   Unimplemented: a major version other than kSpanVersionMajor, or an unknown codec,
//     head kind or block flag in a span whose minor version is newer than
//     kSpanVersionMinor.
// Never reads outside `bytes`.
absl::StatusOr<Span> ParseSpan(absl::string_view bytes);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SPAN_FORMAT_H_
