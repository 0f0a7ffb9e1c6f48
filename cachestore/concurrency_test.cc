// Many threads Put, Get, Delete, Pin and Look up the same few keys of one store at once.
// Labelled `tsan`: `ctest --preset tsan` runs it under ThreadSanitizer. (The same load
// through gRPC is in remote_concurrency_test.cc, not under TSAN: Debian's gRPC and
// Abseil are not instrumented, so TSAN would report their internal locking as races.)
#include <vector>

#include "cachestore/embedded_client.h"
#include "cachestore/internal/hammer.h"
#include "cachestore/internal/test_util.h"
#include "cachestore/store.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

// ThreadSanitizer suppressions for this binary. Debian's RocksDB is not instrumented:
// its lock-free memtable (readers walk a skiplist that writers extend, ordered by
// atomics TSAN cannot see) shows up as races whose both stacks run inside rocksdb::.
// Only reports with a rocksdb:: frame are suppressed; our own locking stays checked.
// (RocksDB's write groups are handled in CacheStore::WriteToDb instead.)
extern "C" const char* __tsan_default_suppressions() { return "race:rocksdb::\n"; }

namespace kvspan::cachestore {
namespace {

using ::kvspan::cachestore::testing::Hammer;
using ::kvspan::cachestore::testing::IsAVariant;
using ::kvspan::cachestore::testing::kNumKeys;
using ::kvspan::cachestore::testing::TempDir;
using ::kvspan::cachestore::testing::TestKey;

TEST(ConcurrencyTest, EmbeddedStoreUnderContention) {
  TempDir dir;
  StoreOptions o;
  o.path = dir.Sub("db");
  o.memory_budget_bytes = 4 * 5000;      // constant memory evictions
  o.disk_budget_bytes = 8 * (5000 + 24);  // and disk evictions
  std::shared_ptr<CacheStore> store(std::move(*CacheStore::Open(o)));
  EmbeddedCacheClient client(store);
  EXPECT_EQ(Hammer(client, 8, 400), 0);
  const StoreStats s = store->Stats();
  EXPECT_EQ(s.checksum_failures, 0);
  EXPECT_LE(s.memory_bytes, o.memory_budget_bytes);
  // Index and RocksDB agree: every key Lookup reports is readable and intact.
  for (int k = 0; k < kNumKeys; ++k) {
    const SpanKey key = TestKey(k);
    absl::StatusOr<size_t> n = store->Lookup(TestKey(999), absl::MakeConstSpan(&key, 1));
    ASSERT_TRUE(n.ok());
    absl::StatusOr<std::optional<Value>> v = store->Get(key);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*n == 1, v->has_value()) << k;
    if (v->has_value()) {
      EXPECT_TRUE(IsAVariant(k, ***v));
    }
  }
}

}  // namespace
}  // namespace kvspan::cachestore
