#include "kvcache/compress.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/key_norm.h"
#include "kvcache/span_format.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kLayers = 2, kHeads = 2, kDim = 16, kS = 16;

// Dense K/V of a whole sequence of `num_tokens`, [layers][heads][num_tokens][D].
struct Sequence {
  int num_tokens;
  std::vector<float> keys, values;
  Sequence(int n, uint64_t seed)
      : num_tokens(n),
        keys(testing::RandomFloats(int64_t{kLayers} * kHeads * n * kDim, seed, 1.0f)),
        values(testing::RandomFloats(int64_t{kLayers} * kHeads * n * kDim, seed + 1, 1.0f)) {}
  // The view of span i: starts at token i * S; strides of the whole sequence.
  DenseKvView span_view(int i) const {
    const int64_t offset = int64_t{i} * kS * kDim;
    return DenseKvView{keys.data() + offset, values.data() + offset,
                       int64_t{kHeads} * num_tokens * kDim, int64_t{num_tokens} * kDim, kDim};
  }
  const float* key(int l, int h, int t) const {
    return keys.data() + ((int64_t{l} * kHeads + h) * num_tokens + t) * kDim;
  }
};

SpanHeader Header(int span_index) {
  SpanHeader h;
  h.model_fingerprint = "test-model";
  h.geometry = SpanGeometry{kLayers, kHeads, kDim, kS};
  h.first_position = span_index * kS;
  h.span_index = span_index;
  return h;
}

absl::StatusOr<Span> Compress(const std::string& policy, const Sequence& seq, int span) {
  ASSIGN_OR_RETURN(Policy p, ParsePolicy(policy));
  return CompressSpan(p, Header(span), seq.span_view(span));
}

std::vector<int32_t> AllPositions(const HeadEntries& head) {
  std::vector<int32_t> out;
  for (const EntryBlock& b : head.blocks)
    out.insert(out.end(), b.positions.begin(), b.positions.end());
  return out;
}

TEST(CompressSpanTest, NoReducerEqualsFromDense) {
  const Sequence seq(2 * kS, 1);
  ASSERT_OK_AND_ASSIGN(Span got, Compress("int4(g=8)", seq, 1));
  SpanHeader header = Header(1);
  header.policy = "int4(g=8)";
  ASSERT_OK_AND_ASSIGN(Span want, Span::FromDense(header, {Codec::kInt4, 8}, seq.span_view(1)));
  EXPECT_EQ(SerializeSpan(got), SerializeSpan(want));
}

TEST(CompressSpanTest, SinksAndWindowPerSpan) {
  const Sequence seq(2 * kS, 2);
  ASSERT_OK_AND_ASSIGN(Span s0, Compress("sinks(3)+window(2)/bf16", seq, 0));
  ASSERT_OK_AND_ASSIGN(Span s1, Compress("sinks(3)+window(2)/bf16", seq, 1));
  EXPECT_EQ(s0.header.policy, "sinks(n=3)+window(n=2)/bf16");
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      EXPECT_THAT(AllPositions(s0.head(l, h)), ElementsAre(0, 1, 2, 14, 15));
      EXPECT_THAT(AllPositions(s1.head(l, h)), ElementsAre(30, 31));
    }
  }
}

TEST(CompressSpanTest, ProtectedTokensAreTheEntriesWithoutAMainReducer) {
  auto protected_tokens = [](const std::string& policy, int32_t first_position, int span_tokens) {
    absl::StatusOr<Policy> p = ParsePolicy(policy);
    EXPECT_OK(p.status());
    return ProtectedTokens(*p, first_position, span_tokens);
  };
  EXPECT_THAT(protected_tokens("sinks(3)+window(2)/bf16", 0, 8), ElementsAre(0, 1, 2, 6, 7));
  EXPECT_THAT(protected_tokens("sinks(3)+window(2)/bf16", 8, 8), ElementsAre(6, 7));
  EXPECT_THAT(protected_tokens("sinks(4)/int8", 8, 8), ElementsAre());         // no sink after span 0
  EXPECT_THAT(protected_tokens("sinks(10)/int8", 8, 8), ElementsAre(0, 1));    // sinks past span 0
  EXPECT_THAT(protected_tokens("window(12)/int8", 8, 4), ElementsAre(0, 1, 2, 3));  // window > S
  EXPECT_THAT(protected_tokens("window(0)/int8", 0, 4), ElementsAre());
  EXPECT_THAT(protected_tokens("int4(g=8)", 4, 4), ElementsAre(0, 1, 2, 3));   // no reducer: all
  EXPECT_THAT(protected_tokens("sinks(2)+keynorm(0.5)/int8", 0, 4), ElementsAre(0, 1));  // protected only
  // Without a main reducer they are exactly CompressSpan's entries, in every head.
  const Sequence seq(2 * kS, 7);
  for (const char* policy : {"sinks(3)+window(5)/int4(g=4)", "window(1)/bf16", "sinks(20)/int2(g=8)"}) {
    for (int span = 0; span < 2; ++span) {
      ASSERT_OK_AND_ASSIGN(Span s, Compress(policy, seq, span));
      std::vector<int32_t> want;
      for (const int t : protected_tokens(policy, span * kS, kS)) want.push_back(span * kS + t);
      for (const HeadEntries& head : s.heads) {
        ASSERT_EQ(head.blocks.size(), 1u);
        EXPECT_EQ(head.blocks[0].positions, want) << policy << " span " << span;
        EXPECT_EQ(head.blocks[0].log_counts, std::vector<float>(want.size(), 0.0f));
      }
    }
  }
}

TEST(CompressSpanTest, KeyNormAfterSinksKeepsLowestNormOfTheRest) {
  const Sequence seq(kS, 3);
  ASSERT_OK_AND_ASSIGN(Span s, Compress("sinks(2)+keynorm(keep=0.25)/bf16", seq, 0));
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      std::vector<std::pair<double, int>> norms;  // candidates 2..15
      for (int t = 2; t < kS; ++t)
        norms.emplace_back(reducers::SquaredNorm(seq.key(l, h, t), kDim), t);
      std::sort(norms.begin(), norms.end());
      std::vector<int32_t> want = {0, 1};
      for (int i = 0; i < 4; ++i) want.push_back(norms[i].second);  // ceil(0.25 * 14)
      std::sort(want.begin(), want.end());
      EXPECT_EQ(AllPositions(s.head(l, h)), want);
    }
  }
}

TEST(CompressSpanTest, MikvKeepsEveryTokenInTwoBlocks) {
  const Sequence seq(kS, 4);
  ASSERT_OK_AND_ASSIGN(Span s, Compress("mikv(hi=int8,lo=int2,keep_hi=0.25,g=8)", seq, 0));
  for (const HeadEntries& h : s.heads) {
    ASSERT_EQ(h.blocks.size(), 2u);
    EXPECT_EQ(h.blocks[0].codec, Codec::kInt8);
    EXPECT_EQ(h.blocks[0].num_entries(), 4);
    EXPECT_EQ(h.blocks[1].codec, Codec::kInt2);
    EXPECT_EQ(h.num_entries(), kS);
  }
}

TEST(CompressSpanTest, RazorRetrievalHeadsKeepEverything) {
  const Sequence seq(2 * kS, 5);
  ASSERT_OK_AND_ASSIGN(Span s, Compress("razor(sinks=2,window=3,retrieval=1.0)/bf16", seq, 1));
  EXPECT_EQ(s.head(1, 0).num_entries(), kS);
  // Other heads of span 1: no sinks, window 29..31, compensation at 28 with log 13.
  EXPECT_THAT(AllPositions(s.head(0, 1)), ElementsAre(28, 29, 30, 31));
  EXPECT_FLOAT_EQ(s.head(0, 1).blocks[0].log_counts[0], std::log(13.0f));
}

TEST(CompressSpanTest, SentinelAnalogueIsLabelled) {
  const Sequence seq(kS, 6);
  ASSERT_OK_AND_ASSIGN(Span s, Compress("sentinel-analogue(k=4)/int8", seq, 0));
  EXPECT_THAT(s.header.policy, HasSubstr("sentinel-analogue"));
  for (const HeadEntries& h : s.heads) EXPECT_THAT(AllPositions(h), ElementsAre(3, 7, 11, 15));
  ASSERT_OK_AND_ASSIGN(Span parsed, ParseSpan(SerializeSpan(s)));
  EXPECT_THAT(parsed.header.policy, HasSubstr("sentinel-analogue"));
}

TEST(CompressSpanTest, KvMergerWithLowestThresholdMergesAllCandidates) {
  const Sequence seq(kS, 12);
  // sim=-1 links every adjacent pair: the 14 candidates between sinks and window merge.
  ASSERT_OK_AND_ASSIGN(Span s,
                       Compress("sinks(1)+window(1)+kvmerger(sim=-1,sigma=4)/bf16", seq, 0));
  for (const HeadEntries& h : s.heads) {
    ASSERT_EQ(h.num_entries(), 3);
    const EntryBlock& b = h.blocks[0];
    EXPECT_EQ(b.positions[0], 0);
    EXPECT_EQ(b.positions[2], 15);
    EXPECT_THAT(b.log_counts, ElementsAre(0.0f, std::log(14.0f), 0.0f));
  }
  ASSERT_OK_AND_ASSIGN(Span parsed, ParseSpan(SerializeSpan(s)));
  EXPECT_EQ(parsed, s);
}

// Causality: a span's bytes never depend on tokens after its end.
TEST(CompressSpanTest, LaterTokensNeverChangeTheSpan) {
  for (const char* policy :
       {"bf16", "int4(g=8)", "sinks(4)+window(4)/int8", "keynorm(0.3)/int4(g=4)",
        "window(2)+kvmerger(sim=0.1,sigma=2)/bf16", "razor(retrieval=0.1)/int2(g=8)",
        "sentinel-analogue(k=3)/fp16", "sinks(1)+keynorm(0.5)/mikv(keep_hi=0.3,g=4)"}) {
    Sequence seq(3 * kS, 7);
    ASSERT_OK_AND_ASSIGN(Span s0, Compress(policy, seq, 0));
    ASSERT_OK_AND_ASSIGN(Span s1, Compress(policy, seq, 1));
    EXPECT_THAT(ValidateSpan(s1), ::kvspan::testing::IsOk());
    const std::string b0 = SerializeSpan(s0), b1 = SerializeSpan(s1);
    const Sequence other(3 * kS, 8);
    for (int l = 0; l < kLayers; ++l) {
      for (int h = 0; h < kHeads; ++h) {
        for (int t = 2 * kS; t < 3 * kS; ++t) {  // tokens after span 1
          const int64_t at = ((int64_t{l} * kHeads + h) * seq.num_tokens + t) * kDim;
          std::copy_n(other.keys.begin() + at, kDim, seq.keys.begin() + at);
          std::copy_n(other.values.begin() + at, kDim, seq.values.begin() + at);
        }
      }
    }
    ASSERT_OK_AND_ASSIGN(Span s1_after, Compress(policy, seq, 1));
    EXPECT_EQ(SerializeSpan(s1_after), b1) << policy;
    // And span 0 does not see span 1's tokens either.
    for (size_t i = 0; i < seq.keys.size(); ++i) {
      const int t = static_cast<int>((i / kDim) % seq.num_tokens);
      if (t >= kS) seq.keys[i] = other.keys[i], seq.values[i] = other.values[i];
    }
    ASSERT_OK_AND_ASSIGN(Span s0_after, Compress(policy, seq, 0));
    EXPECT_EQ(SerializeSpan(s0_after), b0) << policy;
    // The mutation is visible where it should be: span 1 did change.
    ASSERT_OK_AND_ASSIGN(Span s1_changed, Compress(policy, seq, 1));
    EXPECT_NE(SerializeSpan(s1_changed), b1) << policy;
  }
}

// Queries of a whole sequence, [layers][tokens][kQHeads][D] (2 query heads per KV head).
constexpr int kQHeads = 2 * kHeads;
struct QuerySequence {
  int num_tokens;
  std::vector<float> q;
  QuerySequence(int n, uint64_t seed)
      : num_tokens(n), q(testing::RandomFloats(int64_t{kLayers} * n * kQHeads * kDim, seed, 1.0f)) {}
  // Tokens [i * S, num_tokens) as span i's view (token 0 = the span's first token).
  DenseQueryView span_view(int i, int num_after_start = -1) const {
    DenseQueryView v;
    v.q = q.data() + int64_t{i} * kS * kQHeads * kDim;
    v.layer_stride = int64_t{num_tokens} * kQHeads * kDim;
    v.token_stride = kQHeads * kDim;
    v.num_heads = kQHeads;
    v.num_tokens = num_after_start >= 0 ? num_after_start : num_tokens - i * kS;
    return v;
  }
};

absl::StatusOr<Span> CompressWithQueries(const std::string& policy, const Sequence& seq, const DenseQueryView& q,
                                         int span) {
  ASSIGN_OR_RETURN(Policy p, ParsePolicy(policy));
  return CompressSpan(p, Header(span), seq.span_view(span), &q);
}

TEST(CompressSpanTest, QueryNeeds) {
  auto needs = [](const char* text) {
    const absl::StatusOr<Policy> p = ParsePolicy(text);
    EXPECT_TRUE(p.ok()) << text;
    return QueryNeedsOf(*p);
  };
  EXPECT_FALSE(needs("keynorm/int4").any());
  EXPECT_TRUE(needs("expected-attn/int4").own);
  EXPECT_EQ(needs("expected-attn/int4").observation_tokens, 0);
  EXPECT_FALSE(needs("snapkv(obs=5)/bf16").own);
  EXPECT_EQ(needs("snapkv(obs=5)/bf16").observation_tokens, 5);
}

TEST(CompressSpanTest, QueryReadingPoliciesNeedQueries) {
  const Sequence seq(2 * kS, 9);
  const QuerySequence qs(2 * kS, 19);
  EXPECT_THAT(Compress("snapkv(keep=0.2)/bf16", seq, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("decode-side")));
  EXPECT_THAT(Compress("expected-attn/bf16", seq, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expected-attn")));
  // snapkv(obs=4) needs S + 4 query tokens; expected-attn needs S.
  EXPECT_THAT(CompressWithQueries("snapkv(obs=4)/bf16", seq, qs.span_view(0, kS + 3), 0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("needs 20 query tokens, got 19")));
  EXPECT_OK(CompressWithQueries("snapkv(obs=4)/bf16", seq, qs.span_view(0, kS + 4), 0).status());
  EXPECT_THAT(CompressWithQueries("expected-attn/bf16", seq, qs.span_view(0, kS - 1), 0),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  DenseQueryView odd_heads = qs.span_view(0);
  odd_heads.num_heads = 3;
  EXPECT_THAT(CompressWithQueries("expected-attn/bf16", seq, odd_heads, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad query view")));
  DenseQueryView bad_rope = qs.span_view(0);
  const std::vector<float> freq(3, 1.0f);
  bad_rope.rope_inv_freq = freq;
  EXPECT_THAT(CompressWithQueries("expected-attn/bf16", seq, bad_rope, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RoPE frequencies")));
}

// SnapKV votes with the LAST obs query tokens: queries equal to a multiple of one key of
// each head make exactly that key (pool 1, keep 1/S) the survivor, per head.
TEST(CompressSpanTest, SnapKvKeepsTheKeysTheObservationWindowLooksAt) {
  const Sequence seq(2 * kS, 21);
  QuerySequence qs(2 * kS, 22);
  constexpr int kObs = 3;
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      const int target = 2 + 5 * h + l;  // a token of span 0
      for (int t = 2 * kS - kObs; t < 2 * kS; ++t) {
        for (int g = 0; g < 2; ++g) {
          float* q = &qs.q[((int64_t{l} * qs.num_tokens + t) * kQHeads + h * 2 + g) * kDim];
          for (int c = 0; c < kDim; ++c) q[c] = 30.0f * seq.key(l, h, target)[c];
        }
      }
    }
  }
  ASSERT_OK_AND_ASSIGN(Span span, CompressWithQueries("snapkv(keep=0.0625,obs=3,pool=1)/bf16", seq,
                                                      qs.span_view(0), 0));
  EXPECT_EQ(span.header.policy, "snapkv(keep=0.0625,obs=3,pool=1)/bf16");
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) EXPECT_THAT(AllPositions(span.head(l, h)), ElementsAre(2 + 5 * h + l));
  }
}

// Expected attention reads only the span's own queries: later queries and K/V never change
// its bytes; its own queries do.
TEST(CompressSpanTest, ExpectedAttentionIgnoresLaterQueries) {
  Sequence seq(3 * kS, 23);
  QuerySequence qs(3 * kS, 24);
  const std::vector<float> freq = [] {
    std::vector<float> f(kDim / 2);
    for (int i = 0; i < kDim / 2; ++i) f[i] = std::pow(10000.0f, -2.0f * i / kDim);
    return f;
  }();
  DenseQueryView v = qs.span_view(1);
  v.rope_inv_freq = freq;
  const char* policy = "sinks(2)+expected-attn(keep=0.25,future=64)/int8(g=4)";
  ASSERT_OK_AND_ASSIGN(Span before, CompressWithQueries(policy, seq, v, 1));
  for (const HeadEntries& head : before.heads) EXPECT_EQ(head.num_entries(), 4);
  const QuerySequence other(3 * kS, 25);
  for (int l = 0; l < kLayers; ++l) {
    for (int t = 2 * kS; t < 3 * kS; ++t) {
      const int64_t at = (int64_t{l} * qs.num_tokens + t) * kQHeads * kDim;
      std::copy_n(other.q.begin() + at, kQHeads * kDim, qs.q.begin() + at);
    }
  }
  ASSERT_OK_AND_ASSIGN(Span after, CompressWithQueries(policy, seq, v, 1));
  EXPECT_EQ(SerializeSpan(after), SerializeSpan(before));
  std::copy(other.q.begin(), other.q.end(), qs.q.begin());
  ASSERT_OK_AND_ASSIGN(Span changed, CompressWithQueries(policy, seq, v, 1));
  EXPECT_NE(SerializeSpan(changed), SerializeSpan(before));
}

TEST(CompressSpanTest, SharingComposesOnlyWithCodecOnlyPolicies) {
  const Sequence seq(kS, 9);
  for (const char* policy : {"sinks(2)/bf16/minicache", "keynorm(0.5)/int4/pod", "mikv/pod",
                             "mikv/minicache"}) {
    EXPECT_THAT(Compress(policy, seq, 0),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("composes only with a codec-only policy")))
        << policy;
  }
}

TEST(CompressSpanTest, InvalidInputs) {
  const Sequence seq(kS, 10);
  ASSERT_OK_AND_ASSIGN(Policy bf16, ParsePolicy("bf16"));
  EXPECT_THAT(Compress("razor(retrieval=2.0)/bf16", seq, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retrieval head 2.0")));
  EXPECT_THAT(Compress("razor(retrieval=0.2)/bf16", seq, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retrieval head 0.2")));
  DenseKvView null_view = seq.span_view(0);
  null_view.values = nullptr;
  EXPECT_THAT(CompressSpan(bf16, Header(0), null_view),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null K/V")));
  DenseKvView bad_stride = seq.span_view(0);
  bad_stride.token_stride = kDim - 1;
  EXPECT_THAT(CompressSpan(bf16, Header(0), bad_stride),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad strides")));
  SpanHeader bad_header = Header(0);
  bad_header.first_position = -1;
  EXPECT_THAT(CompressSpan(bf16, bad_header, seq.span_view(0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("first_position")));
  std::string many_heads;
  for (int l = 0; l < 1000; ++l) absl::StrAppend(&many_heads, l == 0 ? "" : ":", l, ".0");
  EXPECT_THAT(Compress("razor(retrieval=" + many_heads + ")/bf16", seq, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("canonical policy is")));
  Policy hand_built = bf16;
  hand_built.codec.name = "int4";  // no "g" parameter
  EXPECT_THAT(CompressSpan(hand_built, Header(0), seq.span_view(0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not one ParsePolicy")));
  Policy unknown = bf16;
  unknown.reducers.push_back(PolicyStage{"lru", {}});
  EXPECT_THAT(CompressSpan(unknown, Header(0), seq.span_view(0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lru/bf16")));
  Sequence huge(kS, 11);
  huge.keys[5] = 1e6f;  // beyond the f16 range of int4 params
  EXPECT_THAT(Compress("keynorm(1)/int4", huge, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kvcache
