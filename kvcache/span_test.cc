#include "kvcache/span.h"

#include <cmath>
#include <functional>

#include "common/memory_bytes.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/span_format.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using testing::RandomDenseKv;
using testing::RandomSpan;
using testing::RandomSpanOptions;

TEST(SpanGeometryTest, ValidatesEachField) {
  EXPECT_OK(ValidateGeometry({2, 2, 64, 64}));
  for (const SpanGeometry& g : {SpanGeometry{0, 2, 64, 64}, SpanGeometry{kMaxLayers + 1, 2, 64, 64},
                                SpanGeometry{2, 0, 64, 64}, SpanGeometry{2, 2, 0, 64},
                                SpanGeometry{2, 2, kMaxHeadDim + 1, 64},
                                SpanGeometry{2, 2, 64, 0}, SpanGeometry{2, 2, 64, -3}}) {
    EXPECT_THAT(ValidateGeometry(g), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST(SpanTest, FromDenseKeepsEveryTokenInOrder) {
  RandomSpanOptions o;
  o.geometry = {3, 2, 8, 16};
  o.codec = {Codec::kInt8, 8};
  o.span_index = 5;
  ASSERT_OK_AND_ASSIGN(const Span span, RandomSpan(o));
  ASSERT_OK(ValidateSpan(span));
  ASSERT_EQ(span.heads.size(), 6u);
  const testing::DenseKv kv = RandomDenseKv(o.geometry, o.seed);
  for (int l = 0; l < 3; ++l) {
    for (int h = 0; h < 2; ++h) {
      const HeadEntries& head = span.head(l, h);
      ASSERT_EQ(head.blocks.size(), 1u);
      const EntryBlock& b = head.blocks[0];
      ASSERT_EQ(b.num_entries(), 16);
      for (int t = 0; t < 16; ++t) EXPECT_EQ(b.positions[t], 80 + t);
      const std::vector<float> keys = DecodeBlockKeys(b);
      // Token t channel 3 of (l, h) came from the dense slice (int8: close, not equal).
      for (int t = 0; t < 16; ++t) {
        const float want = kv.keys[((l * 2 + h) * 16 + t) * 8 + 3];
        EXPECT_NEAR(keys[t * 8 + 3], want, 0.05f);
      }
    }
  }
}

TEST(SpanTest, FromDenseNeverReadsPastTheSpan) {
  // The span's tokens are the first S of a longer sequence; changing later tokens must not
  // change the compressed span (a stored span stays valid for every continuation).
  const SpanGeometry g{2, 2, 16, 8};
  const int total_tokens = 20;
  std::vector<float> keys = testing::RandomFloats(2 * 2 * total_tokens * 16, 3, 1.0f);
  std::vector<float> values = testing::RandomFloats(keys.size(), 4, 1.0f);
  DenseKvView view{keys.data(), values.data(), 2 * total_tokens * 16, total_tokens * 16, 16};
  SpanHeader header{"m", "dense", g, 0, 0};
  ASSERT_OK_AND_ASSIGN(const Span before, Span::FromDense(header, {Codec::kInt4, 4}, view));
  for (int lh = 0; lh < 4; ++lh) {
    for (int t = g.span_tokens; t < total_tokens; ++t) {
      for (int d = 0; d < 16; ++d) {
        keys[(lh * total_tokens + t) * 16 + d] += 5.0f;
        values[(lh * total_tokens + t) * 16 + d] -= 5.0f;
      }
    }
  }
  ASSERT_OK_AND_ASSIGN(const Span after, Span::FromDense(header, {Codec::kInt4, 4}, view));
  EXPECT_EQ(SerializeSpan(before), SerializeSpan(after));
  keys[(1 * total_tokens + 7) * 16 + 2] += 5.0f;  // the last token of the span does count
  ASSERT_OK_AND_ASSIGN(const Span changed, Span::FromDense(header, {Codec::kInt4, 4}, view));
  EXPECT_NE(SerializeSpan(before), SerializeSpan(changed));
}

TEST(SpanTest, FromDenseRejectsBadArguments) {
  const SpanGeometry g{1, 1, 4, 4};
  std::vector<float> kv(16, 0.5f);
  DenseKvView view{kv.data(), kv.data(), 16, 16, 4};
  EXPECT_OK(Span::FromDense({"m", "p", g, 0, 0}, {Codec::kBF16, 0}, view));
  EXPECT_THAT(Span::FromDense({"m", "p", {1, 1, 4, 0}, 0, 0}, {Codec::kBF16, 0}, view),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Span::FromDense({"m", "p", g, -4, 0}, {Codec::kBF16, 0}, view),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Span::FromDense({"m", "p", g, 0x7ffffffe, 0}, {Codec::kBF16, 0}, view),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Span::FromDense({std::string(kMaxLabelBytes + 1, 'x'), "p", g, 0, 0},
                              {Codec::kBF16, 0}, view),
              StatusIs(absl::StatusCode::kInvalidArgument));
  DenseKvView bad = view;
  bad.values = nullptr;
  EXPECT_THAT(Span::FromDense({"m", "p", g, 0, 0}, {Codec::kBF16, 0}, bad),
              StatusIs(absl::StatusCode::kInvalidArgument));
  bad = view;
  bad.token_stride = 3;
  EXPECT_THAT(Span::FromDense({"m", "p", g, 0, 0}, {Codec::kBF16, 0}, bad),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Span::FromDense({"m", "p", g, 0, 0}, {Codec::kInt4, 0}, view),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SpanTest, MixedPrecisionKeepsEveryEntryAndFavoursImportantOnes) {
  const int n = 32, dim = 64;
  std::vector<int32_t> positions(n);
  for (int i = 0; i < n; ++i) positions[i] = 64 + i;
  const std::vector<float> log_counts(n, 0.0f);
  const std::vector<float> keys = testing::RandomFloats(n * dim, 21, 1.0f);
  const std::vector<float> values = testing::RandomFloats(n * dim, 22, 1.0f);
  std::vector<uint8_t> important(n, 0);
  for (int i = 0; i < n; i += 3) important[i] = 1;
  const DenseEntries in{dim, positions, log_counts, keys, values};
  ASSERT_OK_AND_ASSIGN(const HeadEntries head,
                       EncodeMixedHead({{Codec::kInt8, 32}, {Codec::kInt2, 32}}, in, important));
  ASSERT_EQ(head.blocks.size(), 2u);
  EXPECT_EQ(head.blocks[0].codec, Codec::kInt8);
  EXPECT_EQ(head.blocks[1].codec, Codec::kInt2);
  EXPECT_EQ(head.blocks[0].num_entries(), 11);
  EXPECT_EQ(head.blocks[1].num_entries(), 21);
  EXPECT_EQ(head.num_entries(), n);
  // Each entry lands in exactly one block with its own key, within its codec's accuracy.
  double err_high = 0, err_low = 0;
  for (int which = 0; which < 2; ++which) {
    const EntryBlock& b = head.blocks[which];
    const std::vector<float> dec = DecodeBlockKeys(b);
    for (int j = 0; j < b.num_entries(); ++j) {
      const int i = b.positions[j] - 64;
      EXPECT_EQ(important[i], which == 0 ? 1 : 0);
      for (int d = 0; d < dim; ++d) {
        const double err = std::fabs(dec[j * dim + d] - keys[i * dim + d]);
        (which == 0 ? err_high : err_low) = std::max(which == 0 ? err_high : err_low, err);
      }
    }
  }
  EXPECT_LT(err_high, 0.05);
  EXPECT_GT(err_low, 4 * err_high);

  Span span;
  span.header = {"m", "mikv", {1, 1, dim, n}, 64, 1};
  span.heads = {head};
  EXPECT_OK(ValidateSpan(span));

  important.pop_back();
  EXPECT_THAT(EncodeMixedHead({}, in, important), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A valid 2-layer span with a shared head, and mutations that each break one invariant.
Span SharedSpan() {
  RandomSpanOptions o;
  o.geometry = {3, 2, 5, 8};  // head_dim 5: int4 rows end in 4 padding bits
  o.codec = {Codec::kInt4, 4};
  o.span_index = 2;
  Span span = RandomSpan(o).value();
  span.head(2, 1).blocks.clear();
  span.head(2, 1).shared_from_layer = 0;
  return span;
}

struct Mutation {
  const char* name;
  std::function<void(Span&)> apply;
};

std::vector<Mutation> InvariantBreakers() {
  return {
      {"position_before_span", [](Span& s) { s.head(0, 0).blocks[0].positions[0] = 15; }},
      {"position_after_span", [](Span& s) { s.head(1, 1).blocks[0].positions[7] = 24; }},
      {"positions_decrease", [](Span& s) { s.head(0, 1).blocks[0].positions[3] = 22; }},
      {"negative_log_count", [](Span& s) { s.head(0, 0).blocks[0].log_counts[1] = -1.0f; }},
      {"nan_log_count", [](Span& s) { s.head(0, 0).blocks[0].log_counts[1] = NAN; }},
      {"inf_log_count", [](Span& s) { s.head(0, 0).blocks[0].log_counts[1] = INFINITY; }},
      {"counts_exceed_span",
       [](Span& s) { s.head(1, 0).blocks[0].log_counts.assign(8, std::log(1.5f)); }},
      {"entries_exceed_span",
       [](Span& s) { s.head(1, 0).blocks.push_back(s.head(1, 0).blocks[0]); }},
      {"too_many_blocks",
       [](Span& s) {
         EntryBlock empty = s.head(0, 0).blocks[0];
         empty.positions.clear();
         empty.log_counts.clear();
         empty.key_data.clear();
         empty.value_data.clear();
         empty.key_params.clear();
         empty.value_params.clear();
         s.head(0, 0).blocks.assign(kMaxBlocksPerHead + 1, empty);
       }},
      {"shared_from_later_layer",
       [](Span& s) {
         s.head(1, 0).blocks.clear();
         s.head(1, 0).shared_from_layer = 2;
       }},
      {"shared_from_itself",
       [](Span& s) {
         s.head(1, 0).blocks.clear();
         s.head(1, 0).shared_from_layer = 1;
       }},
      {"shared_from_shared",
       [](Span& s) {
         s.head(1, 1).blocks.clear();
         s.head(1, 1).shared_from_layer = 0;
         s.head(2, 1).shared_from_layer = 1;
       }},
      {"geometry_head_dim_mismatch", [](Span& s) { s.header.geometry.head_dim = 4; }},
      {"geometry_layers_mismatch", [](Span& s) { s.header.geometry.num_layers = 2; }},
      {"padding_bits_set", [](Span& s) { s.head(0, 0).blocks[0].value_data[2] |= 0xf0; }},
  };
}

TEST(SpanTest, SharedHeadResolvesToTheEarlierLayer) {
  const Span span = SharedSpan();
  ASSERT_OK(ValidateSpan(span));
  EXPECT_EQ(&span.resolved_head(2, 1), &span.head(0, 1));
  EXPECT_EQ(&span.resolved_head(2, 0), &span.head(2, 0));
}

TEST(SpanTest, EachBrokenInvariantIsInvalidArgumentAndParsesAsDataLoss) {
  for (const Mutation& m : InvariantBreakers()) {
    SCOPED_TRACE(m.name);
    Span span = SharedSpan();
    m.apply(span);
    EXPECT_THAT(ValidateSpan(span), StatusIs(absl::StatusCode::kInvalidArgument));
    // Serialized anyway (the checksum is valid), the reader rejects it as corrupt.
    EXPECT_THAT(ParseSpan(SerializeSpan(span)), StatusIs(absl::StatusCode::kDataLoss));
  }
}


TEST(SpanTest, SharedBlocksResolveToTheirSourceBlock) {
  const Span span = testing::SharedBlockSpan();
  ASSERT_OK(ValidateSpan(span));
  EXPECT_EQ(&span.key_block(1, 0, 0), &span.head(0, 0).blocks[0]);
  EXPECT_EQ(&span.value_block(1, 0, 0), &span.head(1, 0).blocks[0]);
  EXPECT_EQ(&span.key_block(2, 1, 0), &span.head(0, 1).blocks[0]);
  EXPECT_EQ(&span.value_block(2, 1, 0), &span.head(0, 1).blocks[0]);
  // Decoded with the scales applied: key scales {1, 2, 0.5, 0}, value scales {2, 1, 1, 0.25}.
  const std::vector<float> k0 = DecodeBlockKeys(span.head(0, 1).blocks[0]);
  const std::vector<float> v0 = DecodeBlockValues(span.head(0, 1).blocks[0]);
  const std::vector<float> k = DecodeSpanBlockKeys(span, 2, 1, 0);
  const std::vector<float> v = DecodeSpanBlockValues(span, 2, 1, 0);
  const float key_scales[] = {1.0f, 2.0f, 0.5f, 0.0f}, value_scales[] = {2.0f, 1.0f, 1.0f, 0.25f};
  ASSERT_EQ(k.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(k[i], k0[i] * key_scales[i / 5]) << i;
    EXPECT_EQ(v[i], v0[i] * value_scales[i / 5]) << i;
  }
  EXPECT_EQ(DecodeSpanBlockKeys(span, 1, 0, 0), DecodeBlockKeys(span.head(0, 0).blocks[0]));
  EXPECT_EQ(DecodeSpanBlockValues(span, 1, 0, 0), DecodeBlockValues(span.head(1, 0).blocks[0]));
}

TEST(SpanTest, EachBrokenSharedBlockRuleIsInvalidArgument) {
  // In memory only: positions, log counts and codes of a shared block are not serialized,
  // so some of these cannot be written (span_corrupt_test.cc covers the bytes).
  const std::vector<Mutation> breakers = {
      {"source_same_layer", [](Span& s) { s.head(2, 1).blocks[0].source_layer = 2; }},
      {"source_later_layer", [](Span& s) { s.head(1, 0).blocks[0].source_layer = 2; }},
      {"chain", [](Span& s) { s.head(2, 1).blocks[0].source_layer = 1; }},
      {"source_is_shared_head",
       [](Span& s) {
         s.head(0, 1).blocks.clear();
         s.head(0, 1).shared_from_layer = 0;  // not an earlier layer either
       }},
      {"source_block_missing",
       [](Span& s) { s.head(2, 1).blocks.push_back(s.head(2, 1).blocks[0]); }},
      {"positions_differ", [](Span& s) { s.head(1, 0).blocks[0].positions[3] = 6; }},
      {"log_counts_differ", [](Span& s) { s.head(1, 0).blocks[0].log_counts[0] = 0.5f; }},
      {"codec_differs", [](Span& s) { s.head(2, 1).blocks[0].codec = Codec::kInt4; }},
      {"owns_keys_too", [](Span& s) { s.head(1, 0).blocks[0].key_data.assign(8, 0); }},
      {"owns_values_too", [](Span& s) { s.head(2, 1).blocks[0].value_data.assign(8, 0); }},
      {"no_mode", [](Span& s) { s.head(1, 0).blocks[0].shares = BlockShares::kNone; }},
      {"mode_without_source",
       [](Span& s) { s.head(0, 0).blocks[0].shares = BlockShares::kKeys; }},
      {"scales_on_owned_block", [](Span& s) { s.head(0, 0).blocks[0].key_scales.assign(4, 0); }},
      {"value_scales_with_own_values",
       [](Span& s) { s.head(1, 0).blocks[0].value_scales.assign(4, 0); }},
      {"scale_count", [](Span& s) { s.head(2, 1).blocks[0].key_scales.pop_back(); }},
      {"scale_negative", [](Span& s) { s.head(2, 1).blocks[0].key_scales[0] = 0xbc00; }},
      {"scales_all_one", [](Span& s) { s.head(2, 1).blocks[0].value_scales.assign(4, 0x3c00); }},
      {"whole_head_shares_a_head_with_shared_blocks",
       [](Span& s) {
         s.head(2, 0).blocks.clear();
         s.head(2, 0).shared_from_layer = 1;
       }},
  };
  for (const Mutation& m : breakers) {
    SCOPED_TRACE(m.name);
    Span span = testing::SharedBlockSpan();
    m.apply(span);
    EXPECT_THAT(ValidateSpan(span), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

// SpanMemoryBytes follows the buffers' capacities, not a formula of n and the codec: at
// least the payload, positions and log counts of every head; growing one array's capacity
// adds exactly the growth; a heap-allocated policy string counts.
TEST(SpanTest, MemoryBytesFollowsBufferCapacities) {
  RandomSpanOptions o;
  o.codec = {Codec::kInt4, 4};
  ASSERT_OK_AND_ASSIGN(Span span, RandomSpan(o));
  const SpanGeometry& g = span.header.geometry;
  const int64_t per_head = PayloadBytes(Codec::kInt4, 4, g.span_tokens, g.head_dim) +
                           int64_t{g.span_tokens} * (sizeof(int32_t) + sizeof(float));
  const int64_t bytes = SpanMemoryBytes(span);
  EXPECT_GE(bytes, g.num_heads_total() * per_head);

  EntryBlock& block = span.heads[1].blocks[0];
  const int64_t block_bytes = BlockMemoryBytes(block);
  const int64_t old_capacity = static_cast<int64_t>(block.key_data.capacity());
  block.key_data.reserve(block.key_data.capacity() + 1000);
  const int64_t growth = static_cast<int64_t>(block.key_data.capacity()) - old_capacity;
  EXPECT_GE(growth, 1000);
  EXPECT_EQ(BlockMemoryBytes(block), block_bytes + growth);
  EXPECT_EQ(SpanMemoryBytes(span), bytes + growth);

  ASSERT_EQ(StringHeapBytes(span.header.policy), 0);  // "dense" fits the string object
  span.header.policy = std::string(200, 'p');
  EXPECT_EQ(SpanMemoryBytes(span), bytes + growth + static_cast<int64_t>(span.header.policy.capacity()) + 1);
}

}  // namespace
}  // namespace kvspan::kvcache
