#include "cachestore/store.h"

#include <memory>
#include <string>
#include <vector>

#include <rocksdb/db.h>

#include "cachestore/internal/record.h"
#include "cachestore/internal/test_util.h"
#include "cachestore/key_scheme.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore {
namespace {

using ::kvspan::cachestore::testing::Payload;
using ::kvspan::cachestore::testing::TempDir;
using ::kvspan::cachestore::testing::TestKey;
using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int64_t kRecord = 1000 + 24;  // record bytes of a 1000-byte value

SpanKey Ns() { return TestKey(0xFFFFFF); }

class StoreTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions o;
    o.path = dir_.Sub("db");
    return o;
  }
  std::unique_ptr<CacheStore> OpenStore(const StoreOptions& o) {
    absl::StatusOr<std::unique_ptr<CacheStore>> s = CacheStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  absl::Status PutValue(CacheStore& store, uint32_t i, size_t size = 1000) {
    const std::string p = Payload(i, size);
    return store.Put(TestKey(i), p, ValueChecksum(p));
  }
  bool Present(CacheStore& store, uint32_t i) {
    const SpanKey k = TestKey(i);
    absl::StatusOr<size_t> n = store.Lookup(Ns(), absl::MakeConstSpan(&k, 1));
    EXPECT_TRUE(n.ok());
    return n.ok() && *n == 1;
  }
  // Replaces the stored record of `key` with `record`, bypassing the store.
  void OverwriteRecord(const std::string& path, const SpanKey& key, const std::string& record) {
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {"meta", rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), path, cfs, &handles, &db).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[0], key.ToBytes(), record).ok());
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    delete db;
  }
  // Whether RocksDB holds any data or metadata for `key`, bypassing the store.
  bool InRocksDb(const std::string& path, const SpanKey& key) {
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {"meta", rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    EXPECT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), path, cfs, &handles, &db).ok());
    std::string v;
    bool found = db->Get(rocksdb::ReadOptions(), handles[0], key.ToBytes(), &v).ok() ||
                 db->Get(rocksdb::ReadOptions(), handles[1], key.ToBytes(), &v).ok();
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    delete db;
    return found;
  }

  TempDir dir_;
};

TEST_F(StoreTest, PutThenGetReturnsTheValue) {
  auto store = OpenStore(Options());
  const std::string p = Payload(7, 100000);
  ASSERT_OK(store->Put(TestKey(7), p, ValueChecksum(p)));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(7)));
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(**v, p);
  const StoreStats s = store->Stats();
  EXPECT_EQ(s.disk_entries, 1);
  EXPECT_EQ(s.disk_bytes, 100000 + 24);
  EXPECT_EQ(s.memory_entries, 1);
  EXPECT_EQ(s.memory_bytes, 100000);
  EXPECT_EQ(s.memory_hits, 1);  // write-through: the Put filled the memory tier
}

TEST_F(StoreTest, MissIsNotAnError) {
  auto store = OpenStore(Options());
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(1)));
  EXPECT_FALSE(v.has_value());
  EXPECT_EQ(store->Stats().misses, 1);
}

TEST_F(StoreTest, PutWithWrongChecksumIsDataLossAndInvisible) {
  auto store = OpenStore(Options());
  const std::string p = Payload(1, 5000);
  EXPECT_THAT(store->Put(TestKey(1), p, ValueChecksum(p) ^ 1),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  EXPECT_FALSE(Present(*store, 1));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(1)));
  EXPECT_FALSE(v.has_value());
}

TEST_F(StoreTest, PutRejectsEmptyAndOversizedValues) {
  StoreOptions o = Options();
  o.max_value_bytes = 4096;
  auto store = OpenStore(o);
  EXPECT_THAT(store->Put(TestKey(1), "", ValueChecksum("")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(PutValue(*store, 2, 4097),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4097")));
  EXPECT_OK(PutValue(*store, 3, 4096));
  EXPECT_EQ(store->Stats().disk_entries, 1);
}

TEST_F(StoreTest, OpenRejectsBadOptions) {
  EXPECT_THAT(CacheStore::Open(StoreOptions()), StatusIs(absl::StatusCode::kInvalidArgument));
  StoreOptions o = Options();
  o.disk_budget_bytes = 0;
  EXPECT_THAT(CacheStore::Open(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(StoreTest, LookupCountsLeadingPresentSpans) {
  auto store = OpenStore(Options());
  for (uint32_t i : {0u, 1u, 3u}) ASSERT_OK(PutValue(*store, i));
  std::vector<SpanKey> chain = {TestKey(0), TestKey(1), TestKey(2), TestKey(3)};
  ASSERT_OK_AND_ASSIGN(size_t n, store->Lookup(Ns(), chain));
  EXPECT_EQ(n, 2u);
  ASSERT_OK_AND_ASSIGN(size_t none, store->Lookup(Ns(), {}));
  EXPECT_EQ(none, 0u);
  EXPECT_THAT(store->Lookup(SpanKey(), chain),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace")));
  std::vector<SpanKey> too_long(kMaxLookupKeys + 1, TestKey(0));
  EXPECT_THAT(store->Lookup(Ns(), too_long), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(StoreTest, DeleteRemovesFromBothTiers) {
  auto store = OpenStore(Options());
  ASSERT_OK(PutValue(*store, 1));
  ASSERT_OK(store->Delete(TestKey(1)));
  EXPECT_FALSE(Present(*store, 1));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(1)));
  EXPECT_FALSE(v.has_value());
  EXPECT_EQ(store->Stats().memory_entries, 0);
  EXPECT_OK(store->Delete(TestKey(1)));  // absent: still OK
}

TEST_F(StoreTest, ValuesSurviveReopen) {
  StoreOptions o = Options();
  {
    auto store = OpenStore(o);
    for (uint32_t i = 0; i < 5; ++i) ASSERT_OK(PutValue(*store, i, 10000 + i));
  }
  auto store = OpenStore(o);
  EXPECT_EQ(store->Stats().disk_entries, 5);
  for (uint32_t i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(i)));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(**v, Payload(i, 10000 + i));
  }
  EXPECT_EQ(store->Stats().disk_hits, 5);
}

TEST_F(StoreTest, MemoryTierEvictsLeastRecentlyUsed) {
  StoreOptions o = Options();
  o.memory_budget_bytes = 3000;  // three 1000-byte values
  auto store = OpenStore(o);
  for (uint32_t i : {1u, 2u, 3u}) ASSERT_OK(PutValue(*store, i));
  ASSERT_OK(store->Get(TestKey(1)).status());  // 1 is now more recent than 2
  ASSERT_OK(PutValue(*store, 4));              // evicts 2 from memory
  StoreStats s = store->Stats();
  EXPECT_EQ(s.memory_entries, 3);
  EXPECT_EQ(s.memory_evictions, 1);
  EXPECT_EQ(s.disk_entries, 4);
  ASSERT_OK(store->Get(TestKey(1)).status());
  ASSERT_OK(store->Get(TestKey(3)).status());
  EXPECT_EQ(store->Stats().disk_hits, 0);
  ASSERT_OK_AND_ASSIGN(std::optional<Value> two, store->Get(TestKey(2)));  // from disk
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(**two, Payload(2, 1000));
  s = store->Stats();
  EXPECT_EQ(s.disk_hits, 1);
  EXPECT_EQ(s.memory_hits, 3);
}

TEST_F(StoreTest, DiskTierEvictsLeastRecentlyUsedAcrossRestart) {
  StoreOptions o = Options();
  o.disk_budget_bytes = 3 * kRecord;
  {
    auto store = OpenStore(o);
    for (uint32_t i : {1u, 2u, 3u}) ASSERT_OK(PutValue(*store, i));
    ASSERT_OK(store->Get(TestKey(1)).status());  // recency persisted at close
  }
  auto store = OpenStore(o);
  ASSERT_OK(PutValue(*store, 4));
  EXPECT_TRUE(Present(*store, 1));
  EXPECT_FALSE(Present(*store, 2));
  EXPECT_TRUE(Present(*store, 3));
  EXPECT_TRUE(Present(*store, 4));
  StoreStats s = store->Stats();
  EXPECT_EQ(s.disk_evictions, 1);
  EXPECT_EQ(s.disk_bytes, 3 * kRecord);
  ASSERT_OK_AND_ASSIGN(std::optional<Value> two, store->Get(TestKey(2)));
  EXPECT_FALSE(two.has_value());
}

TEST_F(StoreTest, PinnedEntriesAreExemptAndSurviveRestart) {
  StoreOptions o = Options();
  o.disk_budget_bytes = 3 * kRecord;
  o.memory_budget_bytes = 2000;
  {
    auto store = OpenStore(o);
    ASSERT_OK(PutValue(*store, 1));
    ASSERT_OK(store->Pin(TestKey(1)));
    ASSERT_OK(store->Pin(TestKey(1)));  // idempotent
    for (uint32_t i = 2; i < 10; ++i) ASSERT_OK(PutValue(*store, i));
    EXPECT_TRUE(Present(*store, 1));
    EXPECT_EQ(store->Stats().pinned_entries, 1);
  }
  auto store = OpenStore(o);
  EXPECT_EQ(store->Stats().pinned_entries, 1);
  for (uint32_t i = 10; i < 20; ++i) ASSERT_OK(PutValue(*store, i));
  EXPECT_TRUE(Present(*store, 1));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(1)));
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(**v, Payload(1, 1000));
  EXPECT_EQ(store->Stats().disk_hits, 0);  // pinned values stay in memory
  // Unpinned, it is the most recent entry; two more Puts evict it... after the others.
  ASSERT_OK(store->Unpin(TestKey(1)));
  ASSERT_OK(PutValue(*store, 20));
  EXPECT_TRUE(Present(*store, 1));
  ASSERT_OK(PutValue(*store, 21));
  ASSERT_OK(PutValue(*store, 22));
  EXPECT_FALSE(Present(*store, 1));
}

TEST_F(StoreTest, PinErrors) {
  StoreOptions o = Options();
  o.memory_budget_bytes = 1500;
  o.disk_budget_bytes = 2 * kRecord;
  auto store = OpenStore(o);
  EXPECT_THAT(store->Pin(TestKey(1)), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->Unpin(TestKey(1)), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(PutValue(*store, 1));
  ASSERT_OK(PutValue(*store, 2));
  ASSERT_OK(store->Pin(TestKey(1)));
  EXPECT_THAT(store->Pin(TestKey(2)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("memory budget")));
  EXPECT_OK(store->Unpin(TestKey(2)));  // not pinned: OK
  // Disk: 1 is pinned and 2 unpinned; a 2-record value cannot fit beside the pin.
  EXPECT_THAT(PutValue(*store, 3, 2 * 1000),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("pinned")));
  EXPECT_TRUE(Present(*store, 2));
}

TEST_F(StoreTest, CorruptValueIsCountedDeletedAndReportedAsMiss) {
  StoreOptions o = Options();
  o.memory_budget_bytes = 0;  // force Gets to read RocksDB
  const std::string p = Payload(5, 20000);
  {
    auto store = OpenStore(o);
    ASSERT_OK(store->Put(TestKey(5), p, ValueChecksum(p)));
    ASSERT_OK(store->Put(TestKey(6), p, ValueChecksum(p)));
  }
  std::string bad = p + internal::EncodeRecordTrailer(p.size(), ValueChecksum(p));
  bad[1000] ^= 0x40;  // one flipped bit in the payload
  OverwriteRecord(o.path, TestKey(5), bad);
  OverwriteRecord(o.path, TestKey(6), "short");  // truncated record
  {
    auto store = OpenStore(o);
    EXPECT_TRUE(Present(*store, 5));  // Lookup does not read values
    for (uint32_t i : {5u, 6u}) {
      ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(i)));
      EXPECT_FALSE(v.has_value());
      EXPECT_FALSE(Present(*store, i));
    }
    const StoreStats s = store->Stats();
    EXPECT_EQ(s.checksum_failures, 2);
    EXPECT_EQ(s.misses, 2);
    EXPECT_EQ(s.disk_entries, 0);
  }
  EXPECT_FALSE(InRocksDb(o.path, TestKey(5)));
  EXPECT_FALSE(InRocksDb(o.path, TestKey(6)));
}

TEST_F(StoreTest, CorruptPinnedValueIsDroppedAtOpen) {
  StoreOptions o = Options();
  const std::string p = Payload(8, 3000);
  {
    auto store = OpenStore(o);
    ASSERT_OK(store->Put(TestKey(8), p, ValueChecksum(p)));
    ASSERT_OK(store->Pin(TestKey(8)));
  }
  std::string bad = p + internal::EncodeRecordTrailer(p.size(), ValueChecksum(p));
  bad[p.size() - 1] ^= 1;  // last payload byte
  OverwriteRecord(o.path, TestKey(8), bad);
  auto store = OpenStore(o);
  EXPECT_FALSE(Present(*store, 8));
  EXPECT_EQ(store->Stats().checksum_failures, 1);
  EXPECT_EQ(store->Stats().pinned_entries, 0);
}

TEST_F(StoreTest, OverwriteReplacesValueAndKeepsPin) {
  auto store = OpenStore(Options());
  ASSERT_OK(PutValue(*store, 1, 1000));
  ASSERT_OK(store->Pin(TestKey(1)));
  const std::string p = Payload(99, 2000);
  ASSERT_OK(store->Put(TestKey(1), p, ValueChecksum(p)));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(TestKey(1)));
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(**v, p);
  const StoreStats s = store->Stats();
  EXPECT_EQ(s.pinned_entries, 1);
  EXPECT_EQ(s.disk_entries, 1);
  EXPECT_EQ(s.disk_bytes, 2000 + 24);
}

}  // namespace
}  // namespace kvspan::cachestore
