// The forward pass on random checkpoints of every supported architecture and config
// variant: (1) prefill in one call == in chunks == token by token with the cache,
// (2) a batch of sequences == each alone, (3) == an independent double-precision
// reference forward (model/testing/reference_forward.cc).
#include <cmath>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "model/model.h"
#include "model/testing/random_checkpoint.h"
#include "model/testing/reference_forward.h"
#include "common/temp_dir.h"

namespace kvspan::model {
namespace {

using ::kvspan::model::testing::RandomCheckpointOptions;
using ::kvspan::testing::TempDir;
using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

// fp32 against fp32 with a different grouping of the same sums (stacked vs one row,
// one attention tile vs several): rounding differences only, logits are O(1).
constexpr double kSameMathBound = 1e-4;
// fp32 forward against the double reference on 2-layer models, hidden 64, 40 tokens:
// fp32 rounding through ~10 matrix products and softmaxes; measured max ~2e-6.
constexpr double kReferenceBound = 1e-4;

struct Variant {
  std::string name;
  RandomCheckpointOptions options;
};

std::vector<Variant> Variants() {
  std::vector<Variant> v;
  RandomCheckpointOptions o;
  v.push_back({"LlamaF32", o});
  o = {};
  o.num_kv_heads = 4;  // multi-head attention
  o.dtype = DType::kF16;
  o.num_shards = 3;
  v.push_back({"LlamaMhaF16ThreeShards", o});
  o = {};
  o.num_kv_heads = 1;  // GQA 4:1
  o.head_dim = 32;     // head_dim from config.json, != hidden / heads
  o.dtype = DType::kBF16;
  o.rope_theta = 500000.0;
  o.rope_scaling.type = RopeScaling::Type::kLlama3;
  o.rope_scaling.factor = 8.0;
  o.rope_scaling.low_freq_factor = 1.0;
  o.rope_scaling.high_freq_factor = 4.0;
  o.rope_scaling.original_max_position_embeddings = 32;  // small, so all three bands occur
  o.tie_word_embeddings = true;
  v.push_back({"Llama3RopeTiedBf16", o});
  o = {};
  o.architecture = Architecture::kMistral;
  o.sliding_window = 7;
  v.push_back({"MistralSlidingWindow", o});
  o = {};
  o.architecture = Architecture::kQwen2;
  o.tie_word_embeddings = true;
  v.push_back({"Qwen2BiasTied", o});
  o = {};
  o.architecture = Architecture::kQwen2;
  o.dtype = DType::kBF16;
  o.num_shards = 2;
  o.rope_theta = 1000000.0;
  v.push_back({"Qwen2Bf16TwoShards", o});
  return v;
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = dist(rng);
  return t;
}

double MaxAbsDiff(const float* a, const float* b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

class ModelForwardTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    ASSERT_OK(testing::WriteRandomCheckpoint(dir_.path(), GetParam().options));
    ASSERT_OK_AND_ASSIGN(model_, Model::Load(dir_.path(), {.num_threads = 2}));
    vocab_ = model_->config().vocab_size;
  }

  // Runs `tokens` through `cache` with all logits; returns them.
  std::vector<float> Run(KvCache* cache, absl::Span<const int32_t> tokens, LogitsMode mode = LogitsMode::kAllTokens) {
    std::vector<float> logits;
    ForwardItem item{.tokens = tokens, .cache = cache, .logits_mode = mode, .logits = &logits};
    EXPECT_OK(model_->Forward(absl::MakeSpan(&item, 1)));
    return logits;
  }

  TempDir dir_;
  std::unique_ptr<Model> model_;
  int vocab_ = 0;
};

TEST_P(ModelForwardTest, LoadsWithTheVariantsConfig) {
  const ModelConfig& c = model_->config();
  const RandomCheckpointOptions& o = GetParam().options;
  EXPECT_EQ(c.architecture, o.architecture);
  EXPECT_EQ(c.tie_word_embeddings, o.tie_word_embeddings);
  EXPECT_EQ(c.qkv_bias, o.architecture == Architecture::kQwen2);
  EXPECT_EQ(c.sliding_window, o.sliding_window);
  EXPECT_EQ(c.rope_scaling.type, o.rope_scaling.type);
  EXPECT_EQ(c.head_dim, o.head_dim > 0 ? o.head_dim : o.hidden_size / o.num_heads);
  ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(64));
  const std::vector<float> logits = Run(cache.get(), RandomTokens(5, vocab_, 1), LogitsMode::kLastToken);
  ASSERT_EQ(logits.size(), static_cast<size_t>(vocab_));
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(cache->num_tokens(), 5);
}

TEST_P(ModelForwardTest, PrefillEqualsChunksEqualsTokenByTokenDecode) {
  const std::vector<int32_t> tokens = RandomTokens(40, vocab_, 2);
  ASSERT_OK_AND_ASSIGN(auto whole_cache, model_->NewDenseCache(64));
  const std::vector<float> whole = Run(whole_cache.get(), tokens);
  ASSERT_EQ(whole.size(), tokens.size() * vocab_);

  ASSERT_OK_AND_ASSIGN(auto chunk_cache, model_->NewDenseCache(64));
  std::vector<float> chunked;
  size_t start = 0;
  for (size_t n : {5, 1, 13, 21}) {
    const std::vector<float> part = Run(chunk_cache.get(), absl::MakeConstSpan(tokens).subspan(start, n));
    chunked.insert(chunked.end(), part.begin(), part.end());
    start += n;
  }
  ASSERT_EQ(chunked.size(), whole.size());
  const double chunk_err = MaxAbsDiff(chunked.data(), whole.data(), whole.size());
  EXPECT_LE(chunk_err, kSameMathBound);

  ASSERT_OK_AND_ASSIGN(auto decode_cache, model_->NewDenseCache(64));
  double decode_err = 0.0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::vector<float> row = Run(decode_cache.get(), absl::MakeConstSpan(tokens).subspan(t, 1), LogitsMode::kLastToken);
    ASSERT_EQ(row.size(), static_cast<size_t>(vocab_));
    decode_err = std::max(decode_err, MaxAbsDiff(row.data(), whole.data() + t * vocab_, vocab_));
  }
  EXPECT_LE(decode_err, kSameMathBound);
  EXPECT_EQ(decode_cache->num_tokens(), 40);
  RecordProperty("chunk_max_abs_err", std::to_string(chunk_err));
  RecordProperty("decode_max_abs_err", std::to_string(decode_err));
}

TEST_P(ModelForwardTest, BatchEqualsEachSequenceAlone) {
  const std::vector<std::vector<int32_t>> seqs = {RandomTokens(12, vocab_, 3), RandomTokens(5, vocab_, 4),
                                                  RandomTokens(20, vocab_, 5)};
  std::vector<std::vector<float>> alone;
  for (const auto& s : seqs) {
    ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(32));
    alone.push_back(Run(cache.get(), s));
  }
  std::vector<std::unique_ptr<DenseKvCache>> caches;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(32));
    caches.push_back(std::move(cache));
  }
  // Step 1: [A 0..6), B whole, C 0..1); step 2: [A 6..12) last-token only, C 1..20).
  std::vector<float> la1, lb, lc1, la2, lc2;
  std::vector<ForwardItem> step1 = {
      {.tokens = absl::MakeConstSpan(seqs[0]).subspan(0, 6), .cache = caches[0].get(), .logits_mode = LogitsMode::kAllTokens, .logits = &la1},
      {.tokens = seqs[1], .cache = caches[1].get(), .logits_mode = LogitsMode::kAllTokens, .logits = &lb},
      {.tokens = absl::MakeConstSpan(seqs[2]).subspan(0, 1), .cache = caches[2].get(), .logits_mode = LogitsMode::kAllTokens, .logits = &lc1}};
  ASSERT_OK(model_->Forward(absl::MakeSpan(step1)));
  std::vector<ForwardItem> step2 = {
      {.tokens = absl::MakeConstSpan(seqs[0]).subspan(6), .cache = caches[0].get(), .logits_mode = LogitsMode::kLastToken, .logits = &la2},
      {.tokens = absl::MakeConstSpan(seqs[2]).subspan(1), .cache = caches[2].get(), .logits_mode = LogitsMode::kAllTokens, .logits = &lc2}};
  ASSERT_OK(model_->Forward(absl::MakeSpan(step2)));
  ASSERT_EQ(la1.size(), 6u * vocab_);
  ASSERT_EQ(lb.size(), 5u * vocab_);
  ASSERT_EQ(lc1.size(), 1u * vocab_);
  ASSERT_EQ(la2.size(), 1u * vocab_);
  ASSERT_EQ(lc2.size(), 19u * vocab_);
  EXPECT_LE(MaxAbsDiff(la1.data(), alone[0].data(), la1.size()), kSameMathBound);
  EXPECT_LE(MaxAbsDiff(la2.data(), alone[0].data() + 11 * vocab_, vocab_), kSameMathBound);
  EXPECT_LE(MaxAbsDiff(lb.data(), alone[1].data(), lb.size()), kSameMathBound);
  EXPECT_LE(MaxAbsDiff(lc1.data(), alone[2].data(), vocab_), kSameMathBound);
  EXPECT_LE(MaxAbsDiff(lc2.data(), alone[2].data() + vocab_, lc2.size()), kSameMathBound);
  EXPECT_EQ(caches[0]->num_tokens(), 12);
  EXPECT_EQ(caches[1]->num_tokens(), 5);
  EXPECT_EQ(caches[2]->num_tokens(), 20);
}

TEST_P(ModelForwardTest, MatchesDoublePrecisionReference) {
  const std::vector<int32_t> tokens = RandomTokens(40, vocab_, 6);
  ASSERT_OK_AND_ASSIGN(std::vector<double> ref, testing::ReferenceForward(dir_.path(), tokens));
  ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(64));
  // Chunked, to also cover attention over cached keys.
  std::vector<float> got = Run(cache.get(), absl::MakeConstSpan(tokens).subspan(0, 25));
  const std::vector<float> rest = Run(cache.get(), absl::MakeConstSpan(tokens).subspan(25));
  got.insert(got.end(), rest.begin(), rest.end());
  ASSERT_EQ(got.size(), ref.size());
  double max_err = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_err = std::max(max_err, std::abs(got[i] - ref[i]));
    max_ref = std::max(max_ref, std::abs(ref[i]));
  }
  std::printf("[%s] max |logit - reference| = %.3g (max |logit| %.3g)\n", GetParam().name.c_str(), max_err, max_ref);
  EXPECT_LE(max_err, kReferenceBound);
  EXPECT_GT(max_ref, 0.5);  // the logits carry signal
}

// Explicit positions: the same logits as the reference with those positions (here every
// token one position further than its index, and one repeated), and clear errors.
TEST_P(ModelForwardTest, ExplicitPositionsMatchReference) {
  const std::vector<int32_t> tokens = RandomTokens(12, vocab_, 9);
  std::vector<int32_t> positions(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i) + (i >= 5 ? 0 : 1);
  ASSERT_OK_AND_ASSIGN(std::vector<double> ref, testing::ReferenceForward(dir_.path(), tokens, positions,
                                                                          [](int i, int k) { return k <= i; }));
  ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(64));
  std::vector<float> got;
  model::ForwardItem item{tokens, cache.get(), LogitsMode::kAllTokens, &got, positions};
  ASSERT_OK(model_->Forward(absl::MakeSpan(&item, 1)));
  ASSERT_EQ(got.size(), ref.size());
  double max_err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) max_err = std::max(max_err, std::abs(got[i] - ref[i]));
  EXPECT_LE(max_err, kReferenceBound);
  // Implicit positions differ from these, so the logits do too.
  ASSERT_OK_AND_ASSIGN(std::vector<double> plain, testing::ReferenceForward(dir_.path(), tokens));
  double plain_diff = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) plain_diff = std::max(plain_diff, std::abs(got[i] - plain[i]));
  EXPECT_GT(plain_diff, 1e-3);

  const std::vector<int32_t> short_positions = {0, 1};
  item.positions = short_positions;
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&item, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 positions for 12 tokens")));
  std::vector<int32_t> bad = positions;
  bad[3] = -1;
  item.positions = bad;
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&item, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("position -1")));
  EXPECT_EQ(cache->num_tokens(), 12);  // the failed calls changed nothing
}

// Forward is thread-safe for distinct caches: two threads decoding their own sequences
// at once get the logits of a sequential run.
TEST_P(ModelForwardTest, ConcurrentForwardOnDistinctCachesMatchesSequential) {
  const std::vector<std::vector<int32_t>> seqs = {RandomTokens(24, vocab_, 8), RandomTokens(24, vocab_, 9)};
  std::vector<std::vector<float>> sequential(2), concurrent(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(32));
    sequential[i] = Run(cache.get(), seqs[i]);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      auto cache = model_->NewDenseCache(32);
      ASSERT_OK(cache.status());
      for (size_t t = 0; t < seqs[i].size(); ++t) {
        const std::vector<float> row = Run(cache->get(), absl::MakeConstSpan(seqs[i]).subspan(t, 1), LogitsMode::kLastToken);
        concurrent[i].insert(concurrent[i].end(), row.begin(), row.end());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(concurrent[i].size(), sequential[i].size());
    EXPECT_LE(MaxAbsDiff(concurrent[i].data(), sequential[i].data(), sequential[i].size()), kSameMathBound);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelForwardTest, ::testing::ValuesIn(Variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) { return info.param.name; });

// The features must matter: turning each off changes the logits beyond the bounds above
// (so the reference comparison above can fail).
TEST(ModelFeatureTest, SlidingWindowBiasAndRopeScalingChangeLogits) {
  const std::vector<int32_t> tokens = RandomTokens(30, 97, 7);
  auto last_logits = [&](const RandomCheckpointOptions& o) -> std::vector<double> {
    TempDir dir;
    EXPECT_OK(testing::WriteRandomCheckpoint(dir.path(), o));
    auto ref = testing::ReferenceForward(dir.path(), tokens);
    EXPECT_OK(ref.status());
    return std::vector<double>(ref->end() - 97, ref->end());
  };
  auto differ = [](const std::vector<double>& a, const std::vector<double>& b) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
  };
  RandomCheckpointOptions mistral;
  mistral.architecture = Architecture::kMistral;
  mistral.sliding_window = 7;
  RandomCheckpointOptions full = mistral;
  full.sliding_window = 0;
  EXPECT_GT(differ(last_logits(mistral), last_logits(full)), 100 * kReferenceBound);
  RandomCheckpointOptions llama3;
  llama3.rope_scaling.type = RopeScaling::Type::kLlama3;
  llama3.rope_scaling.factor = 8.0;
  llama3.rope_scaling.original_max_position_embeddings = 32;
  EXPECT_GT(differ(last_logits(llama3), last_logits(RandomCheckpointOptions{})), 100 * kReferenceBound);
}

}  // namespace
}  // namespace kvspan::model
