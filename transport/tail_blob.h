// The tail blob: what a prefill worker ships after a sequence's spans — the cache's dense
// rows after the last full span (model::DenseRows; for the dense policy, every token) and
// the last prompt token's logits, in one checksummed byte string (docs/architecture.md,
// "The tail blob", has the layout). The decode worker samples the first token from those
// logits and continues the cache from those rows, so it computes nothing of the prompt.
//
// Layout (little-endian, as every kvspan wire format): magic "KVTL", u16 version (1), u16
// flags (bit 0: queries present), u32 num_layers, num_kv_heads, num_heads, head_dim,
// first_position, num_tokens, vocab_size; then fp32 logits[vocab_size], k, v (and q) in
// DenseRows' layout; then the XXH3-64 (seed 0) of every byte before it.
//
// Pure functions; thread-safe.
#ifndef KVSPAN_TRANSPORT_TAIL_BLOB_H_
#define KVSPAN_TRANSPORT_TAIL_BLOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/kv_cache.h"

namespace kvspan::transport {

inline constexpr char kTailMagic[4] = {'K', 'V', 'T', 'L'};
inline constexpr uint16_t kTailVersion = 1;
inline constexpr int64_t kTailHeaderBytes = 36;

struct TailContents {
  model::DenseRows rows;
  std::vector<float> logits;
};

// What the receiver knows before the blob arrives (from its own model and the sequence).
struct TailExpectation {
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int first_position = 0;  // the spans' tokens
  int num_tokens = 0;      // the prompt's tokens after them
  bool with_queries = false;
};

// The blob of `rows` and `logits`. REQUIRES: model::CheckDenseRows passes for the rows'
// own geometry (with queries iff rows.q is non-empty).
std::string SerializeTail(const model::DenseRows& rows, absl::Span<const float> logits);

// Exact size of the blob for `e`: what a receiver may accept at most.
int64_t TailBytes(const TailExpectation& e);

// Parses and checks `bytes` against `e`. DataLoss for a checksum mismatch, a bad magic or
// version, a truncated or oversized blob, or any field that differs from `e`.
absl::StatusOr<TailContents> ParseTail(absl::string_view bytes, const TailExpectation& e);

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_TAIL_BLOB_H_
