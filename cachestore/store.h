// CacheStore: the cache store itself — RocksDB on disk (the durable tier, values in
// BlobDB blob files) with a bounded in-memory LRU tier in front. Values are opaque
// bytes keyed by 16-byte span keys (docs/key-scheme.md); the store wraps each one in a
// record with its XXH3-64 checksum and verifies it on Put and on every Get.
// Capacity, eviction, pinning and durability: docs/cachestore.md.
//
// Thread-safe: every method may be called concurrently, also for the same key. Calls
// for the same key are linearizable (a Get sees either the whole old or the whole new
// value, or a miss; never a partial value).
#ifndef KVSPAN_CACHESTORE_STORE_H_
#define KVSPAN_CACHESTORE_STORE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachestore/internal/lru_index.h"
#include "cachestore/internal/memory_tier.h"
#include "cachestore/internal/record.h"
#include "cachestore/span_key.h"
#include "cachestore/stats.h"
#include "cachestore/types.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class Status;
class WriteBatch;
struct WriteOptions;
}  // namespace rocksdb

namespace kvspan::cachestore {

struct StoreOptions {
  // Directory of the RocksDB database; created if missing. Required.
  std::string path;
  // Byte budget of the in-memory tier (value bytes). Pinned values count against it.
  int64_t memory_budget_bytes = int64_t{256} << 20;
  // Byte budget of the disk tier (record bytes = value + 24-byte trailer). Physical disk
  // use can exceed it while blob garbage collection catches up.
  int64_t disk_budget_bytes = int64_t{16} << 30;
  // The largest value accepted by Put; larger ones get ResourceExhausted.
  int64_t max_value_bytes = int64_t{64} << 20;
  // fsync the WAL before a Put/Delete/Pin is acknowledged (power-loss durability).
  // Without it an acknowledged write survives a process crash (SIGKILL), not a power loss.
  bool sync = false;
  // Values of at least this many bytes (record bytes) go to blob files.
  int64_t min_blob_size_bytes = 4096;
  // Compress blob files with zstd. Spans are already compressed, so off by default.
  bool blob_compression = false;
};

class CacheStore {
 public:
  // Opens (or creates) the store at options.path and rebuilds its in-memory index from
  // the metadata column family; pinned values are loaded into the memory tier.
  // InvalidArgument for bad options; Internal/Unavailable if RocksDB fails to open.
  static absl::StatusOr<std::unique_ptr<CacheStore>> Open(const StoreOptions& options);

  // Persists access recency and closes the database.
  ~CacheStore();
  CacheStore(const CacheStore&) = delete;
  CacheStore& operator=(const CacheStore&) = delete;

  // How many leading keys of `chain` are present (0 .. chain.size()). Reads only the
  // in-memory index: no I/O, does not count hits or misses and does not verify values
  // (a corrupt value is found, and dropped, by Get). InvalidArgument if `namespace_key`
  // is all zero (an unset namespace) or chain has more than kMaxLookupKeys keys.
  absl::StatusOr<size_t> Lookup(const SpanKey& namespace_key, absl::Span<const SpanKey> chain);

  // The value of `key`, or nullopt on a miss (a miss is not an error). A value whose
  // checksum does not match is counted (checksum_failures), deleted and reported as a
  // miss; it is never returned. Internal if RocksDB fails.
  absl::StatusOr<std::optional<Value>> Get(const SpanKey& key);

  // Stores `payload` under `key` (replacing any value, keeping its pin). `checksum` is
  // the caller's XXH3-64 of the payload. Visible to Get/Lookup only after it returns OK.
  // Errors: InvalidArgument for an empty payload; ResourceExhausted if the payload is
  // larger than max_value_bytes or the disk budget is full of pinned entries; DataLoss
  // if `checksum` does not match the payload (nothing is stored); Internal on I/O error.
  absl::Status Put(const SpanKey& key, absl::string_view payload, uint64_t checksum);

  // Removes `key` from both tiers (also if pinned). OK if it was absent.
  absl::Status Delete(const SpanKey& key);

  // Pins `key`: it is loaded into the memory tier and exempt from eviction in both
  // tiers until Unpin; the pin survives restarts. OK if already pinned. NotFound if
  // absent (or found corrupt, which deletes it); ResourceExhausted if the pinned values
  // would exceed the memory budget.
  absl::Status Pin(const SpanKey& key);
  // Unpins `key` (it becomes most recently used). OK if not pinned; NotFound if absent.
  absl::Status Unpin(const SpanKey& key);

  StoreStats Stats() const;

  const StoreOptions& options() const { return options_; }

 private:
  static constexpr int kNumStripes = 64;

  explicit CacheStore(const StoreOptions& options);
  absl::Status OpenDb();
  absl::Status LoadIndex();
  std::shared_mutex& Stripe(const SpanKey& key) { return stripes_[key.bytes[15] % kNumStripes]; }
  // Reads and verifies `key`'s record from RocksDB: nullopt if absent, DataLoss if corrupt.
  absl::StatusOr<std::optional<internal::MemoryTier::Item>> ReadVerified(const SpanKey& key);
  // The one place that writes to RocksDB.
  rocksdb::Status WriteToDb(const rocksdb::WriteOptions& options, rocksdb::WriteBatch* batch);
  // Deletes `key`'s data and metadata in one batch.
  absl::Status DeleteFromDb(const SpanKey& key);
  // REQUIRES: the caller holds Stripe(key) exclusively.
  void DropCorrupt(const SpanKey& key);
  absl::Status WriteMeta(const SpanKey& key, const internal::EntryMeta& meta);
  void EvictDiskOverBudget();
  void PersistAccessTicks();
  uint64_t NextTick() { return next_tick_.fetch_add(1, std::memory_order_relaxed); }

  const StoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* data_cf_ = nullptr;  // owned by db_ (destroyed before it)
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  std::atomic<uint64_t> next_tick_{1};

  // Serialize mutations of one key (exclusive) against reads of it (shared), so that
  // RocksDB and the indexes change together. Never held across another stripe.
  // NOTE: std (pthread) locks, not absl::Mutex: Debian's Abseil is not built with
  // ThreadSanitizer annotations, so TSAN could not see absl::Mutex synchronization.
  std::array<std::shared_mutex, kNumStripes> stripes_;

  mutable std::mutex mu_;  // guards the indexes and counters; never held across I/O
  std::mutex tsan_write_mu_;  // used only in ThreadSanitizer builds (see WriteToDb)
  internal::LruIndex disk_ ABSL_GUARDED_BY(mu_);
  internal::MemoryTier memory_ ABSL_GUARDED_BY(mu_);
  StoreStats counters_ ABSL_GUARDED_BY(mu_);  // only the counter fields are used
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_STORE_H_
