// Tests of the reducers that read queries: SnapKV (observation window) and expected
// attention (the span's own queries). References are computed here independently: plain
// per-query softmax loops for SnapKV; for expected attention, RoPE as complex rotations
// (std::complex, not the reducer's pair arithmetic) and explicit Gaussian moments.
#include <algorithm>
#include <cmath>
#include <complex>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/expected_attention.h"
#include "kvcache/reducers/snapkv.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache::reducers {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

using Rows = testing::RandomRows;

struct Queries {
  std::vector<int32_t> positions;
  std::vector<float> q;
  int head_dim = 0, group = 0;
  QueryRows view() const { return QueryRows{head_dim, group, positions, q}; }
};

Queries RandomQueries(int n, int group, int head_dim, int32_t first_position, uint64_t seed, float scale) {
  Queries r;
  r.head_dim = head_dim;
  r.group = group;
  r.positions.resize(n);
  std::iota(r.positions.begin(), r.positions.end(), first_position);
  r.q = testing::RandomFloats(int64_t{n} * group * head_dim, seed, scale);
  return r;
}

std::vector<int32_t> KeptPositions(const ReducedEntries& e) { return e.positions; }

// ---- SnapKV ------------------------------------------------------------------------------

TEST(SnapKvTest, ScoresMatchReference) {
  for (int pool : {1, 2, 3, 7}) {
    const Rows rows(13, 8, 64, 1);
    const Queries obs = RandomQueries(5, 3, 8, 90, 2, 2.0f);
    const std::vector<double> got = SnapKvScores({0.5, pool}, obs.view(), rows.view());
    // Reference: votes[i] = sum over the 15 query rows of their softmax over the 13 keys.
    std::vector<double> votes(13, 0.0);
    for (int r = 0; r < 15; ++r) {
      std::vector<double> e(13);
      for (int i = 0; i < 13; ++i) {
        double dot = 0;
        for (int c = 0; c < 8; ++c) dot += double{obs.q[r * 8 + c]} * rows.keys[i * 8 + c];
        e[i] = std::exp(dot / std::sqrt(8.0));
      }
      const double z = std::accumulate(e.begin(), e.end(), 0.0);
      for (int i = 0; i < 13; ++i) votes[i] += e[i] / z;
    }
    EXPECT_NEAR(std::accumulate(votes.begin(), votes.end(), 0.0), 15.0, 1e-9);
    for (int i = 0; i < 13; ++i) {
      double want = 0;
      for (int t = 0; t < 13; ++t) {
        if (std::abs(t - i) <= pool / 2) want = std::max(want, votes[t]);
      }
      EXPECT_NEAR(got[i], want, 1e-12) << "pool " << pool << " row " << i;
    }
  }
}

// One observation query aligned with key 9 (and far from the rest): with pool 3, rows 8,
// 9 and 10 share the top pooled vote and are the three kept.
TEST(SnapKvTest, KeepsWhatTheObservationWindowAttendsTo) {
  Rows rows(16, 8, 0, 3);
  Queries obs;
  obs.head_dim = 8;
  obs.group = 1;
  obs.positions = {40};
  obs.q.assign(rows.keys.begin() + 9 * 8, rows.keys.begin() + 10 * 8);
  for (float& x : obs.q) x *= 40.0f;
  EXPECT_THAT(KeptPositions(SnapKvReduce({3.0 / 16, 3}, obs.view(), rows.view())), ElementsAre(8, 9, 10));
  EXPECT_THAT(KeptPositions(SnapKvReduce({1.0 / 16, 1}, obs.view(), rows.view())), ElementsAre(9));
  // keep = 1 keeps every row, unchanged.
  const ReducedEntries all = SnapKvReduce({1.0, 7}, obs.view(), rows.view());
  EXPECT_EQ(all.positions, rows.positions);
  EXPECT_EQ(all.keys, rows.keys);
  EXPECT_EQ(all.values, rows.values);
  EXPECT_THAT(all.log_counts, ::testing::Each(0.0f));
}

// ---- expected attention ------------------------------------------------------------------

// Rotate-half RoPE written with complex numbers: pair i = x[i] + i*x[i + D/2].
std::vector<double> Rotate(const std::vector<double>& x, const std::vector<float>& inv_freq, double position) {
  const int half = static_cast<int>(inv_freq.size());
  std::vector<double> out(x.size());
  for (int i = 0; i < half; ++i) {
    const std::complex<double> z = std::complex<double>(x[i], x[i + half]) *
                                   std::polar(1.0, position * inv_freq[i]);
    out[i] = z.real();
    out[i + half] = z.imag();
  }
  return out;
}

std::vector<float> InvFreq(int head_dim) {
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) f[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / head_dim));
  return f;
}

// One query token, future = 1: the query distribution is a point, mu' = the query moved
// from its own position to span_end, so the expected logit is the plain logit of that
// moved query: score = softmax(<R(span_end - p) q, k> / sqrt(D)) * ||v||.
TEST(ExpectedAttentionTest, SingleQueryIsItsRotatedLogit) {
  constexpr int kD = 16;
  const std::vector<float> inv_freq = InvFreq(kD);
  const Rows rows(10, kD, 32, 5);
  const Queries own = RandomQueries(1, 1, kD, 37, 6, 1.5f);
  const ExpectedAttentionRope rope = MakeExpectedAttentionRope(inv_freq, own.positions, /*span_end=*/48, /*future=*/1);
  ExpectedAttentionOptions o;
  o.rope = &rope;
  const std::vector<double> got = ExpectedAttentionScores(o, own.view(), rows.view());
  const std::vector<double> q(own.q.begin(), own.q.end());
  const std::vector<double> moved = Rotate(q, inv_freq, 48.0 - 37.0);
  std::vector<double> e(10), vnorm(10);
  for (int i = 0; i < 10; ++i) {
    double dot = 0, vv = 0;
    for (int c = 0; c < kD; ++c) dot += moved[c] * rows.keys[i * kD + c], vv += double{rows.values[i * kD + c]} * rows.values[i * kD + c];
    e[i] = std::exp(dot / 4.0);
    vnorm[i] = std::sqrt(vv);
  }
  const double z = std::accumulate(e.begin(), e.end(), 0.0);
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(got[i], e[i] / z * vnorm[i], 1e-9) << i;
}

// No RoPE, several queries: the expected logit is <mu, k>/sqrt(D) + k^T Sigma k / (2D) with
// the queries' mean and population covariance, summed over the group's heads.
TEST(ExpectedAttentionTest, GaussianMomentsWithoutRope) {
  constexpr int kD = 8, kN = 6, kGroup = 2, kM = 12;
  const Rows rows(kM, kD, 0, 7);
  const Queries own = RandomQueries(kN, kGroup, kD, 0, 8, 1.0f);
  ExpectedAttentionOptions o;  // no RoPE
  const std::vector<double> got = ExpectedAttentionScores(o, own.view(), rows.view());
  std::vector<double> want(kM, 0.0);
  for (int h = 0; h < kGroup; ++h) {
    std::vector<double> e(kM);
    for (int i = 0; i < kM; ++i) {
      const float* k = &rows.keys[i * kD];
      // <q_j, k> for each query; mean and variance of the logit over the queries.
      std::vector<double> s(kN);
      for (int j = 0; j < kN; ++j) {
        double dot = 0;
        for (int c = 0; c < kD; ++c) dot += double{own.q[(j * kGroup + h) * kD + c]} * k[c];
        s[j] = dot;
      }
      const double mean = std::accumulate(s.begin(), s.end(), 0.0) / kN;
      double var = 0;
      for (double x : s) var += (x - mean) * (x - mean) / kN;  // = k^T Sigma k
      e[i] = std::exp(mean / std::sqrt(double{kD}) + var / (2.0 * kD));
    }
    const double z = std::accumulate(e.begin(), e.end(), 0.0);
    for (int i = 0; i < kM; ++i) {
      double vv = 0;
      for (int c = 0; c < kD; ++c) vv += double{rows.values[i * kD + c]} * rows.values[i * kD + c];
      want[i] += e[i] / z * std::sqrt(vv);
    }
  }
  for (int i = 0; i < kM; ++i) EXPECT_NEAR(got[i], want[i], 1e-9) << i;
}

// With RoPE, identical pre-RoPE queries at different positions are one point: Sigma = 0,
// and mu' is the average of that query rotated to each future position.
TEST(ExpectedAttentionTest, AveragesRotationOverFuturePositions) {
  constexpr int kD = 8, kN = 4, kM = 9;
  const std::vector<float> inv_freq = InvFreq(kD);
  const Rows rows(kM, kD, 100, 9);
  const std::vector<float> base = testing::RandomFloats(kD, 10, 1.0f);
  const std::vector<double> pre(base.begin(), base.end());
  Queries own;
  own.head_dim = kD;
  own.group = 1;
  for (int j = 0; j < kN; ++j) {
    own.positions.push_back(100 + 2 * j);
    for (double x : Rotate(pre, inv_freq, 100 + 2 * j)) own.q.push_back(static_cast<float>(x));
  }
  const ExpectedAttentionRope rope = MakeExpectedAttentionRope(inv_freq, own.positions, /*span_end=*/109, /*future=*/5);
  ExpectedAttentionOptions o;
  o.rope = &rope;
  const std::vector<double> got = ExpectedAttentionScores(o, own.view(), rows.view());
  std::vector<double> mu(kD, 0.0);
  for (int t = 0; t < 5; ++t) {
    const std::vector<double> r = Rotate(pre, inv_freq, 109 + t);
    for (int c = 0; c < kD; ++c) mu[c] += r[c] / 5;
  }
  std::vector<double> e(kM);
  for (int i = 0; i < kM; ++i) {
    double dot = 0;
    for (int c = 0; c < kD; ++c) dot += mu[c] * rows.keys[i * kD + c];
    e[i] = std::exp(dot / std::sqrt(double{kD}));
  }
  const double z = std::accumulate(e.begin(), e.end(), 0.0);
  for (int i = 0; i < kM; ++i) {
    double vv = 0;
    for (int c = 0; c < kD; ++c) vv += double{rows.values[i * kD + c]} * rows.values[i * kD + c];
    // fp32 queries carry ~1e-7 relative rounding into Sigma; the bound allows it.
    EXPECT_NEAR(got[i], e[i] / z * std::sqrt(vv), 1e-5) << i;
  }
}

TEST(ExpectedAttentionTest, ReduceKeepsTopScoresInPositionOrder) {
  constexpr int kD = 8;
  const Rows rows(16, kD, 0, 11);
  const Queries own = RandomQueries(16, 2, kD, 0, 12, 1.0f);
  const std::vector<float> inv_freq = InvFreq(kD);
  const ExpectedAttentionRope rope =
      MakeExpectedAttentionRope(inv_freq, own.positions, /*span_end=*/16, /*future=*/512);
  ExpectedAttentionOptions o;
  o.keep = 0.25;
  o.rope = &rope;
  const std::vector<double> scores = ExpectedAttentionScores(o, own.view(), rows.view());
  std::vector<int> order(16);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  std::vector<int32_t> want(order.begin(), order.begin() + 4);
  std::sort(want.begin(), want.end());
  EXPECT_THAT(KeptPositions(ExpectedAttentionReduce(o, own.view(), rows.view())), ElementsAreArray(want));
}

TEST(TopScoreRowsTest, HighestFirstTiesToLowerIndex) {
  const std::vector<double> s = {1, 5, 3, 5, 0};
  EXPECT_THAT(TopScoreRows(s, 2), ElementsAre(1, 3));
  EXPECT_THAT(TopScoreRows(s, 3), ElementsAre(1, 2, 3));
  EXPECT_THAT(TopScoreRows(s, 0), ElementsAre());
  EXPECT_THAT(TopScoreRows(s, 9), ElementsAre(0, 1, 2, 3, 4));
}

}  // namespace
}  // namespace kvspan::kvcache::reducers
