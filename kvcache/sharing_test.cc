// Cross-layer sharing (sharing.h): MiniCache against an independent reference written in
// this test (SLERP as a rotation, magnitudes restored, retained set = largest key angles),
// PoD's block structure, group = 1 equal to the plain policy, serialized sizes against the
// size formula of docs/span-format.md.
#include "kvcache/sharing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/float16.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/compress.h"
#include "kvcache/span_format.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

SpanHeader Header(const SpanGeometry& g, int span_index) {
  SpanHeader h;
  h.model_fingerprint = "m";
  h.geometry = g;
  h.first_position = span_index * g.span_tokens;
  h.span_index = span_index;
  return h;
}

absl::StatusOr<Span> Compress(const std::string& policy, const SpanHeader& header,
                              const DenseKvView& kv) {
  ASSIGN_OR_RETURN(Policy p, ParsePolicy(policy));
  return CompressSpan(p, header, kv);
}

// SLERP written differently from the library: rotate a towards b by t * angle in the plane
// they span.
std::vector<double> Rotate(const std::vector<double>& a, const std::vector<double>& b, double t) {
  double cos = 0.0;
  for (size_t i = 0; i < a.size(); ++i) cos += a[i] * b[i];
  const double theta = std::acos(std::clamp(cos, -1.0, 1.0));
  std::vector<double> u(a.size());
  double norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    u[i] = b[i] - cos * a[i];
    norm += u[i] * u[i];
  }
  norm = std::sqrt(norm);
  std::vector<double> e(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    e[i] = std::cos(t * theta) * a[i] + (norm == 0.0 ? 0.0 : std::sin(t * theta) * u[i] / norm);
  }
  return e;
}

TEST(SharingTest, SlerpOfKnownVectors) {
  const std::vector<double> x = {1, 0, 0}, y = {0, 1, 0};
  EXPECT_THAT(Slerp(x, y, 0.5), ::testing::Pointwise(::testing::DoubleNear(1e-12),
                                                     {std::sqrt(0.5), std::sqrt(0.5), 0.0}));
  EXPECT_THAT(Slerp(x, y, 0.25),
              ::testing::Pointwise(::testing::DoubleNear(1e-12),
                                   {std::cos(M_PI / 8), std::sin(M_PI / 8), 0.0}));
  EXPECT_THAT(Slerp(x, y, 0.0), ::testing::Pointwise(::testing::DoubleNear(1e-12), x));
  EXPECT_THAT(Slerp(x, y, 1.0), ::testing::Pointwise(::testing::DoubleNear(1e-12), y));
  EXPECT_THAT(Slerp(x, x, 0.3), ::testing::Pointwise(::testing::DoubleNear(1e-15), x));
}

TEST(SharingTest, FirstSharingLayerIsCeilOfFraction) {
  EXPECT_EQ(FirstSharingLayer(0.5, 4), 2);
  EXPECT_EQ(FirstSharingLayer(0.5, 5), 3);
  EXPECT_EQ(FirstSharingLayer(0.0, 5), 0);
  EXPECT_EQ(FirstSharingLayer(1.0, 5), 5);
}

// MiniCache over 3 layers with from = 0: the pair (0, 1); layer 2 has no partner and stays
// plain.
TEST(SharingTest, MiniCacheMatchesIndependentReference) {
  const SpanGeometry g{3, 2, 8, 16};
  const int S = g.span_tokens, D = g.head_dim;
  const testing::DenseKv kv = testing::RandomDenseKv(g, 5);
  const SpanHeader header = Header(g, 1);
  const double t = 0.3;
  ASSERT_OK_AND_ASSIGN(Span span,
                       Compress("fp16/minicache(from=0,t=0.3,retain=0.25)", header, kv.view(g)));
  EXPECT_EQ(span.header.policy, "fp16/minicache(from=0,t=0.3,retain=0.25)");
  auto row = [&](const std::vector<float>& x, int l, int h, int tok) {
    const float* p = x.data() + ((int64_t{l} * g.num_kv_heads + h) * S + tok) * D;
    return std::vector<double>(p, p + D);
  };
  auto norm = [](const std::vector<double>& x) {
    return std::sqrt(std::inner_product(x.begin(), x.end(), x.begin(), 0.0));
  };
  for (int h = 0; h < g.num_kv_heads; ++h) {
    // Retained: the ceil(0.25 * 16) = 4 tokens with the largest key angle.
    std::vector<std::pair<double, int>> angles;
    for (int tok = 0; tok < S; ++tok) {
      const std::vector<double> a = row(kv.keys, 0, h, tok), b = row(kv.keys, 1, h, tok);
      angles.push_back({-std::acos(std::inner_product(a.begin(), a.end(), b.begin(), 0.0) /
                                   (norm(a) * norm(b))),
                        tok});
    }
    std::sort(angles.begin(), angles.end());
    std::vector<int32_t> retained, merged;
    for (int i = 0; i < S; ++i) (i < 4 ? retained : merged).push_back(header.first_position + angles[i].second);
    std::sort(retained.begin(), retained.end());
    std::sort(merged.begin(), merged.end());

    const HeadEntries& lower = span.head(0, h);
    const HeadEntries& upper = span.head(1, h);
    ASSERT_EQ(lower.blocks.size(), 2u);
    ASSERT_EQ(upper.blocks.size(), 2u);
    EXPECT_EQ(lower.blocks[0].positions, merged);
    EXPECT_EQ(lower.blocks[1].positions, retained);
    EXPECT_EQ(upper.blocks[1].positions, retained);
    EXPECT_FALSE(lower.blocks[0].is_shared());
    EXPECT_EQ(upper.blocks[0].source_layer, 0);
    EXPECT_EQ(upper.blocks[0].shares, BlockShares::kKeysAndValues);
    EXPECT_FALSE(upper.blocks[1].is_shared());

    for (int layer : {0, 1}) {
      for (int kind : {0, 1}) {
        const std::vector<float>& dense = kind == 0 ? kv.keys : kv.values;
        const std::vector<float> got = kind == 0 ? DecodeSpanBlockKeys(span, layer, h, 0)
                                                 : DecodeSpanBlockValues(span, layer, h, 0);
        for (size_t i = 0; i < merged.size(); ++i) {
          const int tok = merged[i] - header.first_position;
          const std::vector<double> a = row(dense, 0, h, tok), b = row(dense, 1, h, tok);
          std::vector<double> ua(D), ub(D);
          for (int d = 0; d < D; ++d) {
            ua[d] = a[d] / norm(a);
            ub[d] = b[d] / norm(b);
          }
          const std::vector<double> e = Rotate(ua, ub, t);
          const double magnitude = norm(layer == 0 ? a : b);
          for (int d = 0; d < D; ++d) {
            // fp16 codes (2^-11 relative) and, in layer 1, an fp16 scale (another 2^-11).
            const double want = magnitude * e[d];
            EXPECT_NEAR(got[i * D + d], want, 2e-3 * magnitude)
                << "layer " << layer << " kind " << kind << " token " << tok << " d " << d;
          }
        }
        // Retained tokens: unchanged, per layer.
        const std::vector<float> kept = kind == 0 ? DecodeSpanBlockKeys(span, layer, h, 1)
                                                  : DecodeSpanBlockValues(span, layer, h, 1);
        for (size_t i = 0; i < retained.size(); ++i) {
          const std::vector<double> x = row(dense, layer, h, retained[i] - header.first_position);
          for (int d = 0; d < D; ++d) EXPECT_EQ(kept[i * D + d], HalfToFloat(FloatToHalf(x[d])));
        }
      }
    }
    // Layer 2 has no partner: one plain block.
    ASSERT_EQ(span.head(2, h).blocks.size(), 1u);
    EXPECT_EQ(span.head(2, h).blocks[0].num_entries(), S);
  }
  // The stored form round-trips (minor 1).
  ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(SerializeSpan(span)));
  EXPECT_TRUE(parsed == span);
}

TEST(SharingTest, MiniCacheOfIdenticalLayersStoresNoScalesAndReconstructs) {
  const SpanGeometry g{4, 2, 16, 16};
  testing::DenseKv kv = testing::RandomDenseKv(g, 6);
  const int64_t layer_floats = int64_t{g.num_kv_heads} * g.span_tokens * g.head_dim;
  std::copy_n(kv.keys.begin() + 2 * layer_floats, layer_floats, kv.keys.begin() + 3 * layer_floats);
  std::copy_n(kv.values.begin() + 2 * layer_floats, layer_floats, kv.values.begin() + 3 * layer_floats);
  const SpanHeader header = Header(g, 0);
  ASSERT_OK_AND_ASSIGN(Span shared, Compress("bf16/minicache(retain=0)", header, kv.view(g)));
  ASSERT_OK_AND_ASSIGN(Span plain, Compress("bf16", header, kv.view(g)));
  for (int h = 0; h < g.num_kv_heads; ++h) {
    for (int l = 0; l < 2; ++l) EXPECT_EQ(shared.head(l, h), plain.head(l, h));  // below from
    const EntryBlock& b = shared.head(3, h).blocks.at(0);
    EXPECT_EQ(b.source_layer, 2);
    EXPECT_TRUE(b.key_scales.empty());  // every ratio is exactly 1
    EXPECT_TRUE(b.value_scales.empty());
    for (int l : {2, 3}) {
      ASSERT_EQ(shared.head(l, h).blocks.size(), 1u);  // nothing retained
      const std::vector<float> k = DecodeSpanBlockKeys(shared, l, h, 0);
      const std::vector<float> want = DecodeBlockKeys(plain.head(l, h).blocks[0]);
      ASSERT_EQ(k.size(), want.size());
      // |x| * (x / |x|) in double, rounded to fp32 then bf16: at most one bf16 step away.
      for (size_t i = 0; i < k.size(); ++i) EXPECT_NEAR(k[i], want[i], 8e-3 * std::abs(want[i]) + 1e-30);
    }
  }
  // Two layers' bf16 payload become one, plus the 6-byte shared block record per head.
  const int64_t saved_per_head = 10 + 4 * int64_t{g.span_tokens} * g.head_dim - 6;
  const int64_t policy_bytes = static_cast<int64_t>(shared.header.policy.size()) -
                               static_cast<int64_t>(plain.header.policy.size());
  EXPECT_EQ(SerializedSize(plain) - SerializedSize(shared),
            g.num_kv_heads * saved_per_head - policy_bytes);
  EXPECT_EQ(static_cast<int64_t>(SerializeSpan(shared).size()), SerializedSize(shared));
}

// Tokens whose merge is ill-defined are retained even with retain = 0: opposite key
// directions (token 3), a zero value row in the lower layer (token 5), a norm ratio above
// the fp16 range (token 9: the upper key is 1e5 times the lower one).
TEST(SharingTest, MiniCacheRetainsIllDefinedMerges) {
  const SpanGeometry g{2, 1, 4, 12};
  testing::DenseKv kv = testing::RandomDenseKv(g, 11);
  const int D = g.head_dim, S = g.span_tokens;
  auto at = [&](std::vector<float>& x, int l, int t) { return x.data() + (int64_t{l} * S + t) * D; };
  for (int d = 0; d < D; ++d) {
    at(kv.keys, 1, 3)[d] = -2.0f * at(kv.keys, 0, 3)[d];
    at(kv.values, 0, 5)[d] = 0.0f;
    at(kv.keys, 0, 9)[d] = 1e-4f * (d + 1);
    at(kv.keys, 1, 9)[d] = 10.0f * (d + 1);
  }
  ASSERT_OK_AND_ASSIGN(Span span, Compress("bf16/minicache(from=0,retain=0)", Header(g, 0), kv.view(g)));
  ASSERT_EQ(span.head(0, 0).blocks.size(), 2u);
  EXPECT_THAT(span.head(0, 0).blocks[1].positions, ElementsAre(3, 5, 9));
  EXPECT_THAT(span.head(1, 0).blocks[1].positions, ElementsAre(3, 5, 9));
  EXPECT_EQ(span.head(0, 0).blocks[0].num_entries(), S - 3);
  ASSERT_OK(ParseSpan(SerializeSpan(span)).status());
}

TEST(SharingTest, PodGroupOneIsThePlainPolicy) {
  const SpanGeometry g{4, 2, 16, 32};
  const testing::DenseKv kv = testing::RandomDenseKv(g, 7);
  for (int span_index : {0, 3}) {
    const SpanHeader header = Header(g, span_index);
    ASSERT_OK_AND_ASSIGN(Span pod, Compress("int4(g=8)/pod(group=1)", header, kv.view(g)));
    ASSERT_OK_AND_ASSIGN(Span plain, Compress("int4(g=8)", header, kv.view(g)));
    EXPECT_EQ(pod.heads, plain.heads);
    // ... and so is a group that starts at the last layer (from = 1: nothing grouped).
    ASSERT_OK_AND_ASSIGN(Span none, Compress("int4(g=8)/pod(from=1,group=4)", header, kv.view(g)));
    EXPECT_EQ(none.heads, plain.heads);
  }
}

TEST(SharingTest, PodSharesDistantKeysAndSizeFollowsTheFormula) {
  const SpanGeometry g{5, 2, 16, 32};  // from 0, group 2: (0, 1), (2, 3), layer 4 plain
  const testing::DenseKv kv = testing::RandomDenseKv(g, 8);
  const SpanHeader header = Header(g, 0);  // span 0: sinks 0..3 present
  ASSERT_OK_AND_ASSIGN(Span pod,
                       Compress("bf16/pod(group=2,sinks=4,window=8)", header, kv.view(g)));
  ASSERT_OK_AND_ASSIGN(Span plain, Compress("bf16", header, kv.view(g)));
  std::vector<int32_t> distant, proximal;
  for (int t = 0; t < g.span_tokens; ++t) (t < 4 || t >= 24 ? proximal : distant).push_back(t);
  for (int h = 0; h < g.num_kv_heads; ++h) {
    for (int lo : {0, 2}) {
      const HeadEntries& lower = pod.head(lo, h);
      const HeadEntries& upper = pod.head(lo + 1, h);
      ASSERT_EQ(lower.blocks.size(), 2u);
      ASSERT_EQ(upper.blocks.size(), 2u);
      EXPECT_EQ(lower.blocks[0].positions, distant);
      EXPECT_EQ(lower.blocks[1].positions, proximal);
      EXPECT_EQ(upper.blocks[0].source_layer, lo);
      EXPECT_EQ(upper.blocks[0].shares, BlockShares::kKeys);
      EXPECT_TRUE(upper.blocks[0].key_scales.empty());
      EXPECT_EQ(DecodeSpanBlockKeys(pod, lo + 1, h, 0), DecodeSpanBlockKeys(pod, lo, h, 0));
      // Own values and own proximal keys equal the plain span's rows of that layer.
      const std::vector<float> plain_k = DecodeBlockKeys(plain.head(lo + 1, h).blocks[0]);
      const std::vector<float> plain_v = DecodeBlockValues(plain.head(lo + 1, h).blocks[0]);
      const std::vector<float> v0 = DecodeSpanBlockValues(pod, lo + 1, h, 0);
      const std::vector<float> k1 = DecodeSpanBlockKeys(pod, lo + 1, h, 1);
      for (size_t i = 0; i < distant.size(); ++i) {
        for (int d = 0; d < g.head_dim; ++d) {
          EXPECT_EQ(v0[i * g.head_dim + d], plain_v[distant[i] * g.head_dim + d]);
        }
      }
      for (size_t i = 0; i < proximal.size(); ++i) {
        for (int d = 0; d < g.head_dim; ++d) {
          EXPECT_EQ(k1[i * g.head_dim + d], plain_k[proximal[i] * g.head_dim + d]);
        }
      }
    }
    EXPECT_EQ(pod.head(4, h), plain.head(4, h));
  }
  // Size (docs/span-format.md), per KV head of a group of two, bf16, n_d distant and n_p
  // proximal tokens, S = n_d + n_p, D = 16: the plain pair costs 2 * (2 + 10 + 4 S D); the
  // PoD pair costs 2 + (10 + 2 n_d + 4 n_d D) + (10 + 2 n_p + 4 n_p D)   lower
  //             + 2 + (6 + 2 n_d D)          + (10 + 2 n_p + 4 n_p D)   upper
  // (explicit positions: neither set starts at first_position + 0 .. n - 1 contiguously).
  const int64_t nd = distant.size(), np = proximal.size(), S = g.span_tokens, D = g.head_dim;
  const int64_t plain_pair = 2 * (2 + 10 + 4 * S * D);
  const int64_t pod_pair = 2 + (10 + 2 * nd + 4 * nd * D) + (10 + 2 * np + 4 * np * D) + 2 +
                           (6 + 2 * nd * D) + (10 + 2 * np + 4 * np * D);
  const int64_t policy_bytes =
      static_cast<int64_t>(pod.header.policy.size()) - static_cast<int64_t>(plain.header.policy.size());
  EXPECT_EQ(SerializedSize(plain) - SerializedSize(pod),
            2 * g.num_kv_heads * (plain_pair - pod_pair) - policy_bytes);
  EXPECT_EQ(static_cast<int64_t>(SerializeSpan(pod).size()), SerializedSize(pod));
  ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(SerializeSpan(pod)));
  EXPECT_TRUE(parsed == pod);
}

TEST(SharingTest, CausalOnlyTheSpansOwnTokensAreRead) {
  // Tokens after the span are NaN: any read of them would make EncodeBlock fail.
  const SpanGeometry g{4, 1, 8, 16};
  const SpanGeometry wide{4, 1, 8, 32};
  testing::DenseKv kv = testing::RandomDenseKv(wide, 9);
  for (int l = 0; l < 4; ++l) {
    for (int t = 16; t < 32; ++t) {
      for (int d = 0; d < 8; ++d) {
        kv.keys[(int64_t{l} * 32 + t) * 8 + d] = NAN;
        kv.values[(int64_t{l} * 32 + t) * 8 + d] = NAN;
      }
    }
  }
  for (const char* policy : {"int8/minicache(from=0)", "int8/pod(group=4)"}) {
    EXPECT_OK(Compress(policy, Header(g, 0), kv.view(wide))) << policy;
  }
}

TEST(SharingTest, BadArgumentsAreInvalidArgument) {
  const SpanGeometry g{2, 1, 8, 8};
  const testing::DenseKv kv = testing::RandomDenseKv(g, 10);
  const SpanHeader header = Header(g, 0);
  EXPECT_THAT(MiniCacheHeads({0.5, 1.5, 0.0}, {Codec::kBF16, 0}, header, kv.view(g)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("minicache t")));
  EXPECT_THAT(PodHeads({0.0, 0, 4, 4}, {Codec::kBF16, 0}, header, kv.view(g)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("group 0")));
  DenseKvView null_view = kv.view(g);
  null_view.keys = nullptr;
  EXPECT_THAT(PodHeads({}, {Codec::kBF16, 0}, header, null_view),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null K/V")));
  // A merged value beyond the codec's range is the codec's InvalidArgument.
  testing::DenseKv huge = kv;
  huge.values[3] = 1e6f;
  EXPECT_THAT(Compress("fp16/minicache(from=0,retain=0)", header, huge.view(g)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kvcache
