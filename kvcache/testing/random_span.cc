#include "kvcache/testing/random_span.h"

#include <random>

#include <cstring>

#include "common/float16.h"
#include "kvcache/span_format.h"

namespace kvspan::kvcache::testing {

std::vector<float> RandomFloats(int64_t count, uint64_t seed, float stddev,
                                Bf16Exact bf16_exact) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> out(count);
  for (float& x : out) {
    x = dist(rng);
    if (bf16_exact == Bf16Exact::kYes) x = Bf16ToFloat(FloatToBf16(x));
  }
  return out;
}

DenseKvView DenseKv::view(const SpanGeometry& g) const {
  DenseKvView v;
  v.keys = keys.data();
  v.values = values.data();
  v.token_stride = g.head_dim;
  v.head_stride = int64_t{g.span_tokens} * g.head_dim;
  v.layer_stride = v.head_stride * g.num_kv_heads;
  return v;
}

DenseKv RandomDenseKv(const SpanGeometry& g, uint64_t seed) {
  const int64_t count = int64_t{g.num_heads_total()} * g.span_tokens * g.head_dim;
  return DenseKv{RandomFloats(count, seed, 1.0f), RandomFloats(count, seed + 1000003, 1.0f)};
}

void ResealSpanBytes(std::string* bytes) {
  const size_t body = bytes->size() - kSpanChecksumBytes;
  const uint64_t sum = SpanChecksum(absl::string_view(bytes->data(), body));
  std::memcpy(bytes->data() + body, &sum, sizeof(sum));
}

absl::StatusOr<Span> RandomSpan(const RandomSpanOptions& options) {
  const DenseKv kv = RandomDenseKv(options.geometry, options.seed);
  SpanHeader header;
  header.model_fingerprint = options.model_fingerprint;
  header.policy = options.policy;
  header.geometry = options.geometry;
  header.span_index = options.span_index;
  header.first_position = options.span_index * options.geometry.span_tokens;
  return Span::FromDense(header, options.codec, kv.view(options.geometry));
}

RandomRows::RandomRows(int m, int head_dim_in, int32_t first_position, uint64_t seed)
    : head_dim(head_dim_in),
      positions(m),
      keys(RandomFloats(int64_t{m} * head_dim_in, seed, 1.0f)),
      values(RandomFloats(int64_t{m} * head_dim_in, seed + 1, 1.0f)) {
  for (int i = 0; i < m; ++i) positions[i] = first_position + i;
}

Span SharedBlockSpan() {
  RandomSpanOptions o;
  o.geometry = {3, 2, 5, 4};
  o.codec = {Codec::kInt2, 2};
  o.span_index = 1;
  o.model_fingerprint = "m";
  o.policy = "p";
  Span span = RandomSpan(o).value();
  for (int h = 0; h < 2; ++h) {  // keys of layer 0, own values
    EntryBlock& b = span.head(1, h).blocks[0];
    b.key_data.clear();
    b.key_params.clear();
    b.source_layer = 0;
    b.shares = BlockShares::kKeys;
  }
  EntryBlock& b = span.head(2, 1).blocks[0];
  b.key_data.clear();
  b.key_params.clear();
  b.value_data.clear();
  b.value_params.clear();
  b.source_layer = 0;
  b.shares = BlockShares::kKeysAndValues;
  b.key_scales = {0x3c00, 0x4000, 0x3800, 0x0000};    // 1, 2, 0.5, 0
  b.value_scales = {0x4000, 0x3c00, 0x3c00, 0x3400};  // 2, 1, 1, 0.25
  return span;
}

}  // namespace kvspan::kvcache::testing
