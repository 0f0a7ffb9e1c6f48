// Test-only builders of random dense K/V and spans (tests, fuzz seeds, benchmarks).
// Deterministic for a given seed. Not thread-safe across calls sharing an Rng.
#ifndef KVSPAN_KVCACHE_TESTING_RANDOM_SPAN_H_
#define KVSPAN_KVCACHE_TESTING_RANDOM_SPAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/span.h"

namespace kvspan::kvcache::testing {

// `count` floats, normal(0, stddev), deterministic in `seed`. With `bf16_exact`, each value
// is rounded to bf16 first (a bf16 model's K/V), so bf16 round trips are exact.
enum class Bf16Exact { kNo, kYes };
std::vector<float> RandomFloats(int64_t count, uint64_t seed, float stddev,
                                Bf16Exact bf16_exact = Bf16Exact::kNo);

struct RandomSpanOptions {
  SpanGeometry geometry{2, 2, 16, 8};
  CodecSpec codec{Codec::kBF16, 0};
  int32_t span_index = 0;           // first_position = span_index * span_tokens
  uint64_t seed = 1;
  std::string model_fingerprint = "test-model";
  std::string policy = "dense";
};

// Dense K/V of the whole span, [layers][kv_heads][S][head_dim] each, from `seed`.
struct DenseKv {
  std::vector<float> keys;
  std::vector<float> values;
  DenseKvView view(const SpanGeometry& g) const;
};
DenseKv RandomDenseKv(const SpanGeometry& geometry, uint64_t seed);

// Owned rows of m tokens of one head for reducer tests: positions first_position + i, keys
// from RandomFloats(m * head_dim, seed, 1), values from seed + 1.
struct RandomRows {
  int head_dim = 0;
  std::vector<int32_t> positions;
  std::vector<float> keys, values;
  RandomRows(int m, int head_dim, int32_t first_position, uint64_t seed);
  reducers::TokenRows view() const { return reducers::TokenRows{head_dim, positions, keys, values}; }
};

// Recomputes the checksum trailer of serialized span bytes (after a deliberate edit), so
// the structural checks behind the checksum can be tested. REQUIRES: size >= 8.
void ResealSpanBytes(std::string* bytes);

// Span::FromDense over RandomDenseKv(options.geometry, options.seed).
absl::StatusOr<Span> RandomSpan(const RandomSpanOptions& options);

// A span with shared blocks of both kinds (cross-layer sharing, entry_block.h): geometry
// {3 layers, 2 KV heads, head_dim 5, S 4}, int2 with G = 2, span index 1, fingerprint "m",
// policy "p", from RandomSpan; then
//   heads (1, 0) and (1, 1): block 0 shares the keys of layer 0 (own int2 values);
//   head (2, 1), the LAST record: block 0 shares keys and values of layer 0 with key
//     scales {1, 2, 0.5, 0} and value scales {2, 1, 1, 0.25} (fp16).
// Its serialized last record is: kind 0, num_blocks 1, codec byte 0, flags 0x3c, u32
// source layer 0, 4 key scales, 4 value scales (24 bytes before the checksum).
Span SharedBlockSpan();

}  // namespace kvspan::kvcache::testing

#endif  // KVSPAN_KVCACHE_TESTING_RANDOM_SPAN_H_
