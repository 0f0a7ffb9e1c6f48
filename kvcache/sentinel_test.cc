// Tests of the exact sentinel-token method (kvcache/sentinel.h): the position and mask
// rules against an independent double-precision forward pass with an explicit mask written
// here from the paper's rules, the spans it exports, and its errors.
#include "kvcache/sentinel.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/compress.h"
#include "kvcache/compressed_kv_cache.h"
#include "model/model.h"
#include "model/testing/random_checkpoint.h"
#include "model/testing/reference_forward.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kCL = 90, kCR = 91;  // two ids of the random checkpoint's vocabulary
constexpr SentinelTokens kSentinels{kCL, kCR};

TEST(PlanSentinelTokensTest, SentinelsDoNotAdvancePositions) {
  SentinelPlan plan;
  ASSERT_OK(PlanSentinelTokens(kSentinels, {5, kCL, 6, 7, kCR, 8}, &plan));
  EXPECT_THAT(plan.positions, ElementsAre(0, 0, 1, 2, 2, 3));
  EXPECT_THAT(plan.roles, ElementsAre(SentinelRole::kOrdinary, SentinelRole::kOpen, SentinelRole::kSpan,
                                      SentinelRole::kSpan, SentinelRole::kClose, SentinelRole::kOrdinary));
  EXPECT_EQ(plan.next_position, 4);
  // Continuing: a span opened at the start of a feed and left open.
  ASSERT_OK(PlanSentinelTokens(kSentinels, {kCL, 9}, &plan));
  EXPECT_THAT(plan.positions, ElementsAre(3, 4));
  EXPECT_TRUE(plan.span_open);
  ASSERT_OK(PlanSentinelTokens(kSentinels, {kCR, 10}, &plan));
  EXPECT_THAT(plan.positions, ElementsAre(4, 5));
  // A sequence that starts with <CL>: position 0 for it and for the first span token.
  SentinelPlan first;
  ASSERT_OK(PlanSentinelTokens(kSentinels, {kCL, 4, kCR}, &first));
  EXPECT_THAT(first.positions, ElementsAre(0, 0, 0));
}

TEST(PlanSentinelTokensTest, BadSpansAreRejectedAndChangeNothing) {
  SentinelPlan plan;
  ASSERT_OK(PlanSentinelTokens(kSentinels, {5, kCL, 6}, &plan));
  const SentinelPlan before = plan;
  EXPECT_THAT(PlanSentinelTokens(kSentinels, {7, kCL}, &plan),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested <CL>")));
  EXPECT_EQ(plan.positions, before.positions);
  EXPECT_EQ(plan.next_position, before.next_position);
  SentinelPlan fresh;
  EXPECT_THAT(PlanSentinelTokens(kSentinels, {5, kCR}, &fresh),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("closes no open span")));
  EXPECT_THAT(PlanSentinelTokens(kSentinels, {kCL, kCR}, &fresh),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty span")));
}

// The paper's rules, written from their text over the whole sequence: roles by a scan,
// then the visibility of key k to query i.
struct Rules {
  std::vector<int> span;  // span index of <CL>, span tokens and <CR>; -1 for ordinary tokens
  std::vector<int32_t> tokens, positions;
  explicit Rules(std::vector<int32_t> t) : tokens(std::move(t)) {
    int open = -1, spans = 0, pos = 0, last = 0;
    for (int32_t tok : tokens) {
      if (tok == kCL) open = spans++;
      span.push_back(open);
      if (tok == kCR) open = -1;
      if (tok == kCL || tok == kCR) {
        positions.push_back(last);
      } else {
        positions.push_back(last = pos++);
      }
    }
  }
  bool IsSentinel(int i) const { return tokens[i] == kCL || tokens[i] == kCR; }
  bool Visible(int i, int k) const {
    if (k == i) return true;
    if (tokens[i] == kCL) return false;                       // <CL>: only itself
    if (tokens[i] == kCR) return span[k] == span[i];          // <CR>: own <CL>, own span
    const bool k_ordinary = span[k] < 0;
    if (tokens[k] == kCR || k_ordinary) return true;          // earlier <CR>s, ordinary tokens
    return span[i] >= 0 && span[k] == span[i] && !IsSentinel(k);  // own span's earlier tokens
  }
};

class SentinelModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ::kvspan::testing::TempDir();
    model::testing::RandomCheckpointOptions o;
    o.num_layers = 3;
    o.seed = 17;
    auto m = model::testing::WriteAndLoadRandomModel(dir_->path(), o, /*num_threads=*/2);
    ASSERT_OK(m.status());
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  static std::unique_ptr<SentinelKvCache> NewCache(int capacity = 64) {
    const model::ModelConfig& c = model_->config();
    auto cache = SentinelKvCache::Create({c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, capacity, kSentinels});
    EXPECT_OK(cache.status());
    return *std::move(cache);
  }
  static ::kvspan::testing::TempDir* dir_;
  static model::Model* model_;
};
::kvspan::testing::TempDir* SentinelModelTest::dir_ = nullptr;
model::Model* SentinelModelTest::model_ = nullptr;

// Every token's logits equal the reference forward pass with the paper's positions and
// mask, fed in uneven chunks (a span open across feeds).
TEST_F(SentinelModelTest, LogitsMatchReferenceWithThePapersMask) {
  const std::vector<int32_t> tokens = {1,  10, 11, kCL, 12, 13, 14, kCR, 15, 16, kCL, 17,
                                       kCR, 18, 19, 20,  kCL, 21, 22, kCR, 23};
  const Rules rules(tokens);
  ASSERT_OK_AND_ASSIGN(std::vector<double> want,
                       model::testing::ReferenceForward(dir_->path(), tokens, rules.positions,
                                                        [&](int i, int k) { return rules.Visible(i, k); }));
  auto cache = NewCache();
  std::vector<float> got, logits;
  for (size_t at = 0, n = 5; at < tokens.size(); at += n, n = (n % 3) + 1) {
    n = std::min(n, tokens.size() - at);
    ASSERT_OK(cache->Feed(*model_, absl::MakeConstSpan(tokens).subspan(at, n), model::LogitsMode::kAllTokens, &logits));
    got.insert(got.end(), logits.begin(), logits.end());
  }
  ASSERT_EQ(got.size(), want.size());
  double max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
  std::printf("sentinel rules vs reference: max |logit diff| = %g\n", max_diff);
  EXPECT_LE(max_diff, 1e-4);
  // The mask matters: plain causal attention at the same positions gives other logits.
  ASSERT_OK_AND_ASSIGN(std::vector<double> causal,
                       model::testing::ReferenceForward(dir_->path(), tokens, rules.positions,
                                                        [](int i, int k) { return k <= i; }));
  double causal_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) causal_diff = std::max(causal_diff, std::abs(got[i] - causal[i]));
  std::printf("the same positions with plain causal attention: max |logit diff| = %g\n", causal_diff);
  EXPECT_GT(causal_diff, 1e-2);
  EXPECT_EQ(cache->next_position(), 15);  // 21 tokens, 6 of them sentinels
  EXPECT_EQ(cache->num_kept(), 9 + 3);    // 9 ordinary tokens + 3 <CR>s (6 span tokens dropped)
}

// ToSpans: a closed span becomes ONE entry (its <CR>, at the position of its last token);
// a CompressedKvCache over those spans continues exactly like the sentinel cache (fp16
// rounding of the stored K/V aside).
TEST_F(SentinelModelTest, SpansCarryOneEntryPerClosedSpanAndContinue) {
  constexpr int kS = 4;
  // Positions: 0 1 | CL(1) 2 3 CR(3) | 4 5 6 7  -> next position 8: two full spans.
  const std::vector<int32_t> tokens = {1, 10, kCL, 11, 12, kCR, 13, 14, 15, 16};
  auto cache = NewCache();
  std::vector<float> logits;
  ASSERT_OK(cache->Feed(*model_, tokens, model::LogitsMode::kLastToken, &logits));
  const model::ModelConfig& c = model_->config();
  // K/V allocated for the capacity (64) plus each committed token's role, position, span id.
  EXPECT_GE(cache->memory_bytes(), 2 * int64_t{c.num_layers} * 64 * c.num_kv_heads * c.head_dim * 4 +
                                       static_cast<int64_t>(tokens.size()) * (1 + 4 + 4));
  SpanHeader header;
  header.model_fingerprint = "random";
  header.geometry = {c.num_layers, c.num_kv_heads, c.head_dim, kS};
  ASSERT_OK_AND_ASSIGN(std::vector<Span> spans, cache->ToSpans(header, CodecSpec{Codec::kFP16, 0}));
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].header.policy, "sentinel/fp16");
  for (int l = 0; l < c.num_layers; ++l) {
    for (int h = 0; h < c.num_kv_heads; ++h) {
      EXPECT_THAT(spans[0].head(l, h).blocks[0].positions, ElementsAre(0, 1, 3));
      EXPECT_THAT(spans[1].head(l, h).blocks[0].positions, ElementsAre(4, 5, 6, 7));
    }
  }
  ASSERT_OK_AND_ASSIGN(Policy fp16, ParsePolicy("fp16"));
  ASSERT_OK_AND_ASSIGN(auto compressed,
                       CompressedKvCache::FromSpans(CompressedKvCache::OptionsFor(c, kS, 32),
                                                    std::make_shared<PolicySpanCompressor>(
                                                        PolicySpanCompressor::Options{fp16, "random"}),
                                                    spans));
  const std::vector<int32_t> more = {20, 21, 22};
  std::vector<float> want, got;
  ASSERT_OK(cache->Feed(*model_, more, model::LogitsMode::kAllTokens, &want));
  model::ForwardItem item{more, compressed.get(), model::LogitsMode::kAllTokens, &got};
  ASSERT_OK(model_->Forward(absl::MakeSpan(&item, 1)));
  ASSERT_EQ(got.size(), want.size());
  float max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
  std::printf("continuation over exported fp16 spans: max |logit diff| = %g\n", max_diff);
  EXPECT_LE(max_diff, 1e-2f);
}

TEST_F(SentinelModelTest, Errors) {
  auto cache = NewCache(8);
  std::vector<float> logits;
  // Tokens that bypass Feed have no roles.
  const std::vector<int32_t> one = {5};
  model::ForwardItem item{one, cache.get(), model::LogitsMode::kLastToken, &logits};
  EXPECT_FALSE(model_->Forward(absl::MakeSpan(&item, 1)).ok());
  EXPECT_EQ(cache->num_tokens(), 0);
  // A bad span changes nothing.
  EXPECT_THAT(cache->Feed(*model_, {5, kCR}, model::LogitsMode::kLastToken, &logits),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(cache->num_tokens(), 0);
  ASSERT_OK(cache->Feed(*model_, {5, kCL, 6}, model::LogitsMode::kLastToken, &logits));
  SpanHeader header;
  header.geometry = {model_->config().num_layers, model_->config().num_kv_heads, model_->config().head_dim, 2};
  EXPECT_THAT(cache->ToSpans(header, CodecSpec{Codec::kBF16, 0}), StatusIs(absl::StatusCode::kFailedPrecondition));
  // Capacity.
  EXPECT_FALSE(cache->Feed(*model_, {7, 8, 9, 10, 11, 12}, model::LogitsMode::kLastToken, &logits).ok());
  EXPECT_EQ(cache->num_tokens(), 3);
  EXPECT_THAT(SentinelKvCache::Create({1, 2, 2, 8, 8, {3, 3}}), StatusIs(absl::StatusCode::kInvalidArgument));
  // The exact method is not a span reducer: CompressSpan refuses it with a pointer here.
  ASSERT_OK_AND_ASSIGN(Policy sentinel, ParsePolicy("sentinel/bf16"));
  std::vector<float> kv(2 * 2 * 8 * 8, 0.5f);
  SpanHeader h;
  h.geometry = {2, 2, 8, 8};
  EXPECT_THAT(CompressSpan(sentinel, h, DenseKvView{kv.data(), kv.data(), 2 * 8 * 8, 8 * 8, 8}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sentinel-analogue")));
}

// The shipped model's tokenizer has no sentinels (the analogue policy applies); a tokenizer
// that adds "<CL>" and "<CR>" is recognized.
TEST(FindSentinelTokensTest, FromTokenizerAddedTokens) {
  const std::string brown = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";
  ASSERT_OK_AND_ASSIGN(auto plain, model::Tokenizer::LoadFromDir(brown));
  EXPECT_FALSE(FindSentinelTokens(*plain).has_value());
  ::kvspan::testing::TempDir dir;
  std::ifstream in(brown + "/tokenizer.json");
  nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& [id, content] : {std::pair<int, const char*>{4096, "<CL>"}, {4097, "<CR>"}}) {
    j["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", false}});
  }
  std::ofstream(dir.path() + "/tokenizer.json") << j.dump();
  std::ifstream cfg(brown + "/tokenizer_config.json");
  std::ofstream(dir.path() + "/tokenizer_config.json") << cfg.rdbuf();
  ASSERT_OK_AND_ASSIGN(auto with, model::Tokenizer::LoadFromDir(dir.path()));
  const std::optional<SentinelTokens> found = FindSentinelTokens(*with);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->cl, 4096);
  EXPECT_EQ(found->cr, 4097);
}

}  // namespace
}  // namespace kvspan::kvcache
