// Tests of the merging reducers: KVMerger, RazorAttention's compensation entry, the
// sentinel-token analogue, and the log-count softmax-mass argument.
#include <cmath>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/kvmerger.h"
#include "kvcache/reducers/razor.h"
#include "kvcache/reducers/sentinel_analogue.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache::reducers {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::Pair;

constexpr int kDim = 8;

struct Rows {
  std::vector<int32_t> positions;
  std::vector<float> keys, values;
  TokenRows view() const { return TokenRows{kDim, positions, keys, values}; }
  const float* key(int i) const { return keys.data() + i * kDim; }
  const float* value(int i) const { return values.data() + i * kDim; }
};

Rows RandomRows(int m, int32_t first, uint64_t seed) {
  Rows r;
  r.positions.resize(m);
  std::iota(r.positions.begin(), r.positions.end(), first);
  r.keys = testing::RandomFloats(int64_t{m} * kDim, seed, 1.0f);
  r.values = testing::RandomFloats(int64_t{m} * kDim, seed + 1, 1.0f);
  return r;
}

double TestCos(const float* a, const float* b) {
  double ab = 0, aa = 0, bb = 0;
  for (int d = 0; d < kDim; ++d) {
    ab += double{a[d]} * b[d];
    aa += double{a[d]} * a[d];
    bb += double{b[d]} * b[d];
  }
  return ab / std::sqrt(aa * bb);
}

// Rows 0-2 near one direction, 3 another, 4-5 a third (near each other), 6 random.
Rows ClusteredRows() {
  Rows r = RandomRows(7, 10, 42);
  const std::vector<float> noise = testing::RandomFloats(7 * kDim, 7, 0.05f);
  for (int i = 0; i < 7; ++i) {
    const int source = i <= 2 ? 0 : i == 3 ? 3 : (i <= 5 ? 4 : 6);
    for (int d = 0; d < kDim; ++d)
      r.keys[i * kDim + d] = r.keys[source * kDim + d] + noise[i * kDim + d];
  }
  return r;
}

TEST(KvMergerTest, RunsAreExactlyTheLinksAboveThreshold) {
  const Rows rows = ClusteredRows();
  const double sim = 0.95;
  // Reference runs from the test's own cosine.
  std::vector<std::pair<int, int>> want;
  int begin = 0;
  for (int i = 0; i < 7; ++i) {
    if (i + 1 == 7 || TestCos(rows.key(i), rows.key(i + 1)) < sim) {
      want.emplace_back(begin, i + 1);
      begin = i + 1;
    }
  }
  EXPECT_THAT(KvMergerRuns({sim, 1.0}, rows.view()), ::testing::ElementsAreArray(want));
  EXPECT_THAT(want, ElementsAre(Pair(0, 3), Pair(3, 4), Pair(4, 6), Pair(6, 7)));
}

TEST(KvMergerTest, NonAdjacentPositionsNeverMerge) {
  Rows rows = ClusteredRows();
  rows.positions[1] += 0;  // 10, 11, 12, ...: make a gap between rows 1 and 2
  for (int i = 2; i < 7; ++i) rows.positions[i] += 1;
  EXPECT_THAT(KvMergerRuns({0.95, 1.0}, rows.view()),
              ElementsAre(Pair(0, 2), Pair(2, 3), Pair(3, 4), Pair(4, 6), Pair(6, 7)));
}

TEST(KvMergerTest, MergedEntryIsGaussianWeightedAroundPivot) {
  const Rows rows = ClusteredRows();
  const double sigma = 0.1;
  const ReducedEntries out = KvMergerReduce({0.95, sigma}, rows.view());
  ASSERT_EQ(out.size(), 4);
  // Run [0, 3): the pivot is the medoid by summed cosine.
  int pivot = 0;
  double best = -1e9;
  for (int i = 0; i < 3; ++i) {
    double s = 0;
    for (int j = 0; j < 3; ++j) s += j == i ? 0 : TestCos(rows.key(i), rows.key(j));
    if (s > best) best = s, pivot = i;
  }
  EXPECT_EQ(KvMergerPivot(rows.view(), 0, 3), pivot);
  double w[3], wsum = 0;
  for (int j = 0; j < 3; ++j) {
    double dist2 = 0;
    for (int d = 0; d < kDim; ++d)
      dist2 += std::pow(double{rows.key(j)[d]} - rows.key(pivot)[d], 2);
    w[j] = std::exp(-dist2 / (2 * sigma * sigma));
    wsum += w[j];
  }
  EXPECT_EQ(out.positions[0], 10 + pivot);
  EXPECT_FLOAT_EQ(out.log_counts[0], std::log(3.0f));
  for (int d = 0; d < kDim; ++d) {
    double k = 0, v = 0;
    for (int j = 0; j < 3; ++j) k += w[j] * rows.key(j)[d], v += w[j] * rows.value(j)[d];
    EXPECT_NEAR(out.keys[d], k / wsum, 1e-6);
    EXPECT_NEAR(out.values[d], v / wsum, 1e-6);
  }
  // Singletons unchanged; the pair has log 2.
  EXPECT_EQ(out.positions[1], 13);
  EXPECT_EQ(out.log_counts[1], 0.0f);
  EXPECT_FLOAT_EQ(out.log_counts[2], std::log(2.0f));
  EXPECT_EQ(out.log_counts[3], 0.0f);
  EXPECT_EQ(out.keys[3 * kDim], rows.key(6)[0]);
}

// Attention output of one query over entries: softmax(q.k + log_count) weighted values.
std::vector<double> Attend(const float* q, const std::vector<float>& keys,
                           const std::vector<float>& values, const std::vector<float>& lc) {
  const size_t n = lc.size();
  std::vector<double> logits(n), out(kDim, 0.0);
  double mx = -1e300, z = 0;
  for (size_t i = 0; i < n; ++i) {
    double s = lc[i];
    for (int d = 0; d < kDim; ++d) s += double{q[d]} * keys[i * kDim + d];
    logits[i] = s;
    mx = std::max(mx, s);
  }
  for (size_t i = 0; i < n; ++i) z += std::exp(logits[i] - mx);
  for (size_t i = 0; i < n; ++i) {
    const double p = std::exp(logits[i] - mx) / z;
    for (int d = 0; d < kDim; ++d) out[d] += p * values[i * kDim + d];
  }
  return out;
}

TEST(LogCountTest, MergedIdenticalKeysKeepSoftmaxMass) {
  Rows rows = RandomRows(6, 0, 11);
  for (int i = 1; i <= 3; ++i) {  // rows 1-3: identical keys, different values
    std::copy(rows.key(1), rows.key(1) + kDim, rows.keys.begin() + i * kDim);
  }
  const ReducedEntries merged = KvMergerReduce({0.999, 1.0}, rows.view());
  ASSERT_EQ(merged.size(), 4);
  ASSERT_FLOAT_EQ(merged.log_counts[1], std::log(3.0f));
  const std::vector<float> query = testing::RandomFloats(kDim, 99, 1.0f);
  const std::vector<float> zero(6, 0.0f);
  const std::vector<double> full = Attend(query.data(), rows.keys, rows.values, zero);
  const std::vector<double> got =
      Attend(query.data(), merged.keys, merged.values, merged.log_counts);
  for (int d = 0; d < kDim; ++d) EXPECT_NEAR(got[d], full[d], 1e-5) << d;
  // Without the log count the merged entry would carry a third of the mass.
  const std::vector<double> no_lc =
      Attend(query.data(), merged.keys, merged.values, std::vector<float>(4, 0.0f));
  double diff = 0;
  for (int d = 0; d < kDim; ++d) diff += std::abs(no_lc[d] - full[d]);
  EXPECT_GT(diff, 1e-3);
}

TEST(RazorTest, OtherHeadKeepsSinksWindowAndMeanCompensation) {
  const Rows rows = RandomRows(16, 0, 21);
  const ReducedEntries out = RazorReduce({2, 3}, {0, 16}, HeadRole::kOther, rows.view());
  // Kept 0, 1, 13, 14, 15; dropped 2..12 (11 tokens) -> one entry at 12.
  EXPECT_THAT(out.positions, ElementsAre(0, 1, 12, 13, 14, 15));
  EXPECT_THAT(out.log_counts,
              ElementsAre(0.0f, 0.0f, FloatNear(std::log(11.0f), 1e-6), 0.0f, 0.0f, 0.0f));
  for (int d = 0; d < kDim; ++d) {
    double k = 0, v = 0;
    for (int i = 2; i <= 12; ++i) k += rows.key(i)[d], v += rows.value(i)[d];
    EXPECT_NEAR(out.keys[2 * kDim + d], k / 11, 1e-6);
    EXPECT_NEAR(out.values[2 * kDim + d], v / 11, 1e-6);
  }
  EXPECT_EQ(out.keys[0], rows.key(0)[0]);
}

TEST(RazorTest, LaterSpanHasNoSinks) {
  const Rows rows = RandomRows(16, 16, 22);
  const ReducedEntries out = RazorReduce({4, 2}, {16, 16}, HeadRole::kOther, rows.view());
  EXPECT_THAT(out.positions, ElementsAre(29, 30, 31));
  EXPECT_FLOAT_EQ(out.log_counts[0], std::log(14.0f));
}

TEST(RazorTest, RetrievalHeadKeepsEverything) {
  const Rows rows = RandomRows(16, 0, 23);
  const ReducedEntries out = RazorReduce({2, 3}, {0, 16}, HeadRole::kRetrieval, rows.view());
  EXPECT_EQ(out.size(), 16);
  EXPECT_EQ(out.keys, rows.keys);
  EXPECT_EQ(out.values, rows.values);
}

TEST(RazorTest, NothingDroppedMeansNoCompensation) {
  const Rows rows = RandomRows(4, 0, 24);
  EXPECT_EQ(RazorReduce({4, 0}, {0, 4}, HeadRole::kOther, rows.view()).size(), 4);
}

TEST(SentinelAnalogueTest, KEntriesFromConsecutiveChunks) {
  const Rows rows = RandomRows(10, 30, 31);
  const ReducedEntries out = SentinelAnalogueReduce(3, rows.view());
  // Chunks [0,3), [3,6), [6,10): positions at chunk ends.
  EXPECT_THAT(out.positions, ElementsAre(32, 35, 39));
  EXPECT_THAT(out.log_counts,
              ElementsAre(FloatNear(std::log(3.0f), 1e-6), FloatNear(std::log(3.0f), 1e-6),
                          FloatNear(std::log(4.0f), 1e-6)));
  const int bounds[4] = {0, 3, 6, 10};
  for (int c = 0; c < 3; ++c) {
    for (int d = 0; d < kDim; ++d) {
      double k = 0, v = 0;
      for (int j = bounds[c]; j < bounds[c + 1]; ++j) k += rows.key(j)[d], v += rows.value(j)[d];
      EXPECT_NEAR(out.keys[c * kDim + d], k / (bounds[c + 1] - bounds[c]), 1e-6);
      EXPECT_NEAR(out.values[c * kDim + d], v / (bounds[c + 1] - bounds[c]), 1e-6);
    }
  }
}

TEST(SentinelAnalogueTest, MoreEntriesThanTokensKeepsTokens) {
  const Rows rows = RandomRows(3, 0, 32);
  const ReducedEntries out = SentinelAnalogueReduce(8, rows.view());
  EXPECT_THAT(out.positions, ElementsAre(0, 1, 2));
  EXPECT_THAT(out.log_counts, ElementsAre(0.0f, 0.0f, 0.0f));
  EXPECT_EQ(out.keys, rows.keys);
}

}  // namespace
}  // namespace kvspan::kvcache::reducers
