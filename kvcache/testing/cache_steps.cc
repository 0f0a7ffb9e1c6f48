#include "kvcache/testing/cache_steps.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "kvcache/policy.h"
#include "model/testing/random_checkpoint.h"

namespace kvspan::kvcache::testing {

PolicySpanCompressor::Options CodecOnly(Codec codec, int group_size) {
  std::string text = CodecName(codec);
  if (IsQuantized(codec)) text += "(g=" + std::to_string(group_size) + ")";
  absl::StatusOr<Policy> policy = ParsePolicy(text);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return {policy.value_or(Policy{}), "test"};
}

std::shared_ptr<SpanCompressor> CodecCompressor(Codec codec, int group_size) {
  return std::make_shared<PolicySpanCompressor>(CodecOnly(codec, group_size));
}

std::vector<float> Step(const model::Model& m, model::KvCache* cache, absl::Span<const int32_t> tokens) {
  std::vector<float> logits;
  model::ForwardItem item{tokens, cache, model::LogitsMode::kLastToken, &logits};
  absl::Status s = m.Forward(absl::MakeSpan(&item, 1));
  EXPECT_TRUE(s.ok()) << s;
  return logits;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u + (i * i) % 97) % vocab);
  return t;
}

::kvspan::testing::TempDir* TinyModelTest::dir_ = nullptr;
model::Model* TinyModelTest::model_ = nullptr;

void TinyModelTest::SetUpTestSuite() {
  dir_ = new ::kvspan::testing::TempDir();
  auto m = model::testing::WriteAndLoadRandomModel(dir_->path(), model::testing::RandomCheckpointOptions{},
                                                   /*num_threads=*/2);
  ASSERT_TRUE(m.ok()) << m.status();
  model_ = m->release();
}

void TinyModelTest::TearDownTestSuite() {
  delete model_;
  model_ = nullptr;
  delete dir_;
  dir_ = nullptr;
}

}  // namespace kvspan::kvcache::testing
