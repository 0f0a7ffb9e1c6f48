#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;

std::vector<float> LogProbs(const std::vector<double>& p) {
  std::vector<float> out;
  for (double x : p) out.push_back(static_cast<float>(std::log(x)));
  return out;
}

// Draws n samples and returns the observed frequency of each id.
std::vector<double> Frequencies(Sampler& s, const std::vector<float>& logits, int n) {
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) f[s.Sample(logits)] += 1.0 / n;
  return f;
}

// A fixed seed makes these deterministic; the bound is five standard deviations of a
// binomial frequency, so a correct sampler passes for any seed with high probability and a
// wrong distribution (off by more than ~2 points) fails.
void ExpectNear(const std::vector<double>& observed, const std::vector<double>& expected, int n) {
  ASSERT_EQ(observed.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const double sigma = std::sqrt(expected[i] * (1 - expected[i]) / n);
    EXPECT_NEAR(observed[i], expected[i], 5 * sigma + 1e-12) << "id " << i;
  }
}

TEST(SamplerTest, GreedyIsArgMaxWithLowestIdOnTies) {
  ASSERT_OK_AND_ASSIGN(Sampler s, Sampler::Create({.temperature = 0}));
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{NAN, -INFINITY, 2.0f}), 2);
  EXPECT_EQ(ArgMax(std::vector<float>{-INFINITY, -INFINITY}), 0);
}

TEST(SamplerTest, MatchesSoftmaxDistribution) {
  constexpr int kN = 40000;
  ASSERT_OK_AND_ASSIGN(Sampler s, Sampler::Create({.temperature = 1.0, .seed = 7}));
  ExpectNear(Frequencies(s, LogProbs({0.5, 0.3, 0.2}), kN), {0.5, 0.3, 0.2}, kN);
}

TEST(SamplerTest, TemperatureSharpensAndFlattens) {
  constexpr int kN = 40000;
  // With temperature T the probabilities become p^(1/T), renormalized.
  ASSERT_OK_AND_ASSIGN(Sampler hot, Sampler::Create({.temperature = 2.0, .seed = 1}));
  const double a = std::sqrt(0.8), b = std::sqrt(0.2);
  ExpectNear(Frequencies(hot, LogProbs({0.8, 0.2}), kN), {a / (a + b), b / (a + b)}, kN);
  ASSERT_OK_AND_ASSIGN(Sampler cold, Sampler::Create({.temperature = 0.5, .seed = 2}));
  ExpectNear(Frequencies(cold, LogProbs({0.8, 0.2}), kN), {0.64 / 0.68, 0.04 / 0.68}, kN);
}

TEST(SamplerTest, TopKDropsTheTail) {
  constexpr int kN = 40000;
  ASSERT_OK_AND_ASSIGN(Sampler s, Sampler::Create({.temperature = 1.0, .top_k = 2, .seed = 3}));
  ExpectNear(Frequencies(s, LogProbs({0.2, 0.5, 0.3}), kN), {0.0, 0.625, 0.375}, kN);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  constexpr int kN = 40000;
  // Sorted mass: 0.5, 0.8, 1.0 -> top_p 0.75 keeps the first two.
  ASSERT_OK_AND_ASSIGN(Sampler s, Sampler::Create({.temperature = 1.0, .top_p = 0.75, .seed = 4}));
  ExpectNear(Frequencies(s, LogProbs({0.3, 0.2, 0.5}), kN), {0.375, 0.0, 0.625}, kN);
  // A tiny top_p always keeps the single most likely token.
  ASSERT_OK_AND_ASSIGN(Sampler t, Sampler::Create({.temperature = 1.0, .top_p = 1e-9, .seed = 5}));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(t.Sample(LogProbs({0.3, 0.2, 0.5})), 2);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = LogProbs({0.25, 0.25, 0.25, 0.25});
  ASSERT_OK_AND_ASSIGN(Sampler a, Sampler::Create({.seed = 42}));
  ASSERT_OK_AND_ASSIGN(Sampler b, Sampler::Create({.seed = 42}));
  ASSERT_OK_AND_ASSIGN(Sampler c, Sampler::Create({.seed = 43}));
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(a.Sample(logits));
    tb.push_back(b.Sample(logits));
    tc.push_back(c.Sample(logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

// Sample is SampleWithUniform of the stream's next draw: a twin sampler that only draws
// (what a device sampler's caller does) gives the same tokens, as long as it draws exactly
// when Sample does (not greedy, some logit finite).
TEST(SamplerTest, SampleIsSampleWithUniformOfTheNextDraw) {
  const SamplingOptions options{.temperature = 0.8, .top_k = 5, .top_p = 0.9, .seed = 11};
  ASSERT_OK_AND_ASSIGN(Sampler sampler, Sampler::Create(options));
  ASSERT_OK_AND_ASSIGN(Sampler twin, Sampler::Create(options));
  const std::vector<float> rows[] = {LogProbs({0.1, 0.2, 0.3, 0.15, 0.05, 0.2}), LogProbs({0.6, 0.4}),
                                     {NAN, -INFINITY}, LogProbs({0.25, 0.25, 0.25, 0.25})};
  SamplingScratch scratch;
  for (int i = 0; i < 200; ++i) {
    const std::vector<float>& x = rows[i % 4];
    const bool draws = std::any_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); });
    const int32_t want = draws ? SampleWithUniform(x, twin.options(), twin.DrawUniform(), &scratch) : 0;
    ASSERT_EQ(sampler.Sample(x), want) << "step " << i;
  }
  // Greedy ignores u.
  const std::vector<float> x = {0.1f, 3.0f, -1.0f, 3.0f};
  for (double u : {0.0, 0.5, 0.999}) EXPECT_EQ(SampleWithUniform(x, {.temperature = 0}, u), 1);
}

TEST(SamplerTest, RejectsBadOptions) {
  EXPECT_THAT(Sampler::Create({.temperature = -1}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Sampler::Create({.temperature = NAN}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Sampler::Create({.top_k = -2}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Sampler::Create({.top_p = 0}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Sampler::Create({.top_p = 1.5}), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::model
