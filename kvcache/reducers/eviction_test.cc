// Tests of the eviction reducers: sinks + window, key norm, MiKV importance.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/key_norm.h"
#include "kvcache/reducers/mikv.h"
#include "kvcache/reducers/sinks_window.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache::reducers {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

using Rows = testing::RandomRows;

std::vector<int32_t> Kept(const SinksWindowOptions& o, const SpanContext& ctx) {
  std::vector<int32_t> kept;
  for (int t = 0; t < ctx.span_tokens; ++t) {
    if (InSinksOrWindow(o, ctx, ctx.first_position + t)) kept.push_back(ctx.first_position + t);
  }
  return kept;
}

TEST(SinksWindowTest, SinksOnlyInFirstSpan) {
  const SinksWindowOptions o{4, 0};
  EXPECT_THAT(Kept(o, {0, 8}), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Kept(o, {8, 8}), ElementsAre());
  EXPECT_THAT(Kept(o, {16, 8}), ElementsAre());
}

TEST(SinksWindowTest, SinksLongerThanSpanReachSecondSpan) {
  EXPECT_THAT(Kept({10, 0}, {8, 8}), ElementsAre(8, 9));
}

TEST(SinksWindowTest, WindowIsTailOfEverySpan) {
  const SinksWindowOptions o{2, 3};
  EXPECT_THAT(Kept(o, {0, 8}), ElementsAre(0, 1, 5, 6, 7));
  EXPECT_THAT(Kept(o, {8, 8}), ElementsAre(13, 14, 15));
  EXPECT_THAT(Kept({0, 0}, {8, 8}), ElementsAre());
  EXPECT_THAT(Kept({0, 100}, {8, 8}), ElementsAre(8, 9, 10, 11, 12, 13, 14, 15));
}

TEST(KeyNormTest, KeepCountRoundsUp) {
  EXPECT_EQ(KeepCount(0.25, 64), 16);
  EXPECT_EQ(KeepCount(0.25, 63), 16);
  EXPECT_EQ(KeepCount(1.0, 7), 7);
  EXPECT_EQ(KeepCount(0.01, 7), 1);
  EXPECT_EQ(KeepCount(0.0, 7), 0);
}

TEST(KeyNormTest, KeepsExactlyTheLowestNormKeys) {
  for (uint64_t seed : {1, 2, 3}) {
    const Rows rows(37, 16, 100, seed);
    const ReducedEntries out = KeyNormReduce(rows.view(), 0.3);
    // Independent reference: sort positions by the float L2 norm.
    std::vector<std::pair<double, int32_t>> by_norm;
    for (int i = 0; i < 37; ++i) {
      double s = 0;
      for (int d = 0; d < 16; ++d) s += rows.keys[i * 16 + d] * rows.keys[i * 16 + d];
      by_norm.emplace_back(std::sqrt(s), rows.positions[i]);
    }
    std::sort(by_norm.begin(), by_norm.end());
    std::vector<int32_t> want;
    for (int i = 0; i < 12; ++i) want.push_back(by_norm[i].second);  // ceil(0.3*37) = 12
    std::sort(want.begin(), want.end());
    EXPECT_THAT(out.positions, ElementsAreArray(want));
    for (int i = 0; i < out.size(); ++i) {
      const int row = out.positions[i] - 100;
      EXPECT_EQ(out.log_counts[i], 0.0f);
      EXPECT_TRUE(std::equal(rows.keys.begin() + row * 16, rows.keys.begin() + row * 16 + 16,
                             out.keys.begin() + i * 16));
      EXPECT_TRUE(std::equal(rows.values.begin() + row * 16, rows.values.begin() + row * 16 + 16,
                             out.values.begin() + i * 16));
    }
  }
}

TEST(KeyNormTest, ScaledKeysAreDroppedFirst) {
  Rows rows(8, 4, 0, 9);
  for (int i : {1, 4, 6}) {
    for (int d = 0; d < 4; ++d) rows.keys[i * 4 + d] *= 100.0f;
  }
  EXPECT_THAT(KeyNormReduce(rows.view(), 5.0 / 8).positions, ElementsAre(0, 2, 3, 5, 7));
}

TEST(MikvTest, ImportantAreLowestNormAndNoneDropped) {
  const Rows rows(20, 8, 0, 5);
  ReducedEntries entries;
  entries.head_dim = 8;
  for (int i = 0; i < 20; ++i) entries.AppendRow(rows.view(), i);
  const std::vector<uint8_t> important = MikvImportance(entries, 0.2);
  ASSERT_EQ(important.size(), 20u);
  EXPECT_EQ(std::count(important.begin(), important.end(), 1), 4);
  const std::vector<int> lowest = LowestKeyNormRows(rows.view(), 4);
  for (int i = 0; i < 20; ++i) {
    const bool in_lowest = std::find(lowest.begin(), lowest.end(), i) != lowest.end();
    EXPECT_EQ(important[i] == 1, in_lowest) << i;
  }
}

}  // namespace
}  // namespace kvspan::kvcache::reducers
