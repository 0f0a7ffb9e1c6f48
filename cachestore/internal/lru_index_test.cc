#include "cachestore/internal/lru_index.h"

#include "cachestore/internal/memory_tier.h"
#include "cachestore/internal/test_util.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore::internal {
namespace {

using ::kvspan::cachestore::testing::TestKey;

TEST(LruIndexTest, VictimIsLeastRecentUnpinned) {
  LruIndex index;
  index.Upsert(TestKey(1), 10, 1);
  index.Upsert(TestKey(2), 20, 2);
  index.Upsert(TestKey(3), 30, 3);
  EXPECT_EQ(index.bytes_used(), 60);
  EXPECT_EQ(index.LeastRecentUnpinned(), TestKey(1));
  EXPECT_TRUE(index.Touch(TestKey(1), 4));
  EXPECT_EQ(index.LeastRecentUnpinned(), TestKey(2));
  EXPECT_TRUE(index.SetPinned(TestKey(2), true));
  EXPECT_EQ(index.LeastRecentUnpinned(), TestKey(3));
  EXPECT_EQ(index.bytes_pinned(), 20);
  EXPECT_EQ(index.num_pinned(), 1);
  EXPECT_TRUE(index.Erase(TestKey(3)));
  EXPECT_EQ(index.LeastRecentUnpinned(), TestKey(1));
  EXPECT_TRUE(index.Erase(TestKey(1)));
  EXPECT_FALSE(index.LeastRecentUnpinned().has_value());  // only the pinned one is left
  EXPECT_FALSE(index.Touch(TestKey(9), 5));
  EXPECT_FALSE(index.Erase(TestKey(9)));
  EXPECT_EQ(index.bytes_used(), 20);
}

TEST(LruIndexTest, UpsertKeepsPinAndUpdatesSize) {
  LruIndex index;
  index.Upsert(TestKey(1), 10, 1);
  index.SetPinned(TestKey(1), true);
  index.Upsert(TestKey(1), 15, 2);
  EXPECT_TRUE(index.Find(TestKey(1))->pinned);
  EXPECT_EQ(index.bytes_used(), 15);
  EXPECT_EQ(index.bytes_pinned(), 15);
  EXPECT_TRUE(index.SetPinned(TestKey(1), false));
  EXPECT_EQ(index.bytes_pinned(), 0);
  EXPECT_EQ(index.LeastRecentUnpinned(), TestKey(1));
}

MemoryTier::Item ItemOf(size_t size) {
  return MemoryTier::Item{std::make_shared<const std::string>(size, 'x'), 0};
}

TEST(MemoryTierTest, EvictsLeastRecentAndRefusesWhatCannotFit) {
  MemoryTier tier(100);
  int64_t evicted = 0;
  EXPECT_TRUE(tier.Insert(TestKey(1), ItemOf(40), false, 1, &evicted));
  EXPECT_TRUE(tier.Insert(TestKey(2), ItemOf(40), true, 2, &evicted));
  EXPECT_TRUE(tier.Get(TestKey(1), 3).has_value());
  EXPECT_TRUE(tier.Insert(TestKey(3), ItemOf(40), false, 4, &evicted));
  EXPECT_EQ(evicted, 1);  // key 1: the pinned key 2 is exempt
  EXPECT_FALSE(tier.Contains(TestKey(1)));
  EXPECT_FALSE(tier.Insert(TestKey(4), ItemOf(101), false, 5, &evicted));  // over budget
  EXPECT_FALSE(tier.Insert(TestKey(5), ItemOf(61), false, 6, &evicted));   // 40 pinned
  EXPECT_TRUE(tier.Contains(TestKey(3)));
  EXPECT_EQ(tier.bytes_used(), 80);
  EXPECT_TRUE(tier.CanPin(60));
  EXPECT_FALSE(tier.CanPin(61));
}

}  // namespace
}  // namespace kvspan::cachestore::internal
