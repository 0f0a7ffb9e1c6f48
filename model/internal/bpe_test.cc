#include "model/internal/bpe.h"

#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::model::internal {
namespace {

using ::testing::ElementsAre;

TEST(BpeMergesTest, MergesLowestRankFirstAndLeftmostOnTies) {
  // Tokens: a=0 b=1 c=2 ab=3 bc=4 abc=5 aa=6.
  BpeMerges merges;
  merges.Add(1, 2, /*rank=*/0, /*merged=*/4);  // b c
  merges.Add(0, 1, /*rank=*/1, /*merged=*/3);  // a b
  merges.Add(0, 4, /*rank=*/2, /*merged=*/5);  // a bc
  merges.Add(0, 0, /*rank=*/3, /*merged=*/6);  // a a
  std::vector<int32_t> s = {0, 1, 2};
  merges.Apply(&s);
  EXPECT_THAT(s, ElementsAre(5));  // (b c) first, then (a bc); never (a b)
  s = {0, 0, 0};
  merges.Apply(&s);
  EXPECT_THAT(s, ElementsAre(6, 0));
  s = {0, 1, 0, 1};
  merges.Apply(&s);
  EXPECT_THAT(s, ElementsAre(3, 3));
}

TEST(BpeMergesTest, LaterDuplicateRuleWins) {
  BpeMerges merges;
  merges.Add(0, 1, 0, 5);
  merges.Add(0, 1, 1, 6);
  std::vector<int32_t> s = {0, 1};
  merges.Apply(&s);
  EXPECT_THAT(s, ElementsAre(6));
}

// The heap (long inputs) and the rescan (short inputs) must give identical results.
TEST(BpeMergesTest, HeapAndScanAgreeOnRandomRules) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    BpeMerges merges;
    const int alphabet = 4 + trial % 5;
    int next_id = alphabet;
    for (int r = 0; r < 40; ++r) {
      merges.Add(rng() % next_id, rng() % next_id, r, next_id);
      ++next_id;
    }
    for (int len : {2, 5, 30, 200}) {
      std::vector<int32_t> input(len);
      for (int32_t& x : input) x = rng() % alphabet;
      std::vector<int32_t> a = input, b = input;
      merges.ApplyByScan(&a);
      merges.ApplyByHeap(&b);
      ASSERT_EQ(a, b) << "trial " << trial << " len " << len;
    }
  }
}

}  // namespace
}  // namespace kvspan::model::internal
