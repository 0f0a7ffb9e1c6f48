// StoreStats: a snapshot of a cache store's counters, shared by the store, the service
// and every CacheClient. A plain value type.
#ifndef KVSPAN_CACHESTORE_STATS_H_
#define KVSPAN_CACHESTORE_STATS_H_

#include <cstdint>
#include <string>

namespace kvspan::cachestore {

struct StoreStats {
  int64_t memory_entries = 0;
  int64_t memory_bytes = 0;      // value bytes in the memory tier
  int64_t disk_entries = 0;
  int64_t disk_bytes = 0;        // record bytes in the disk tier (logical)
  int64_t pinned_entries = 0;
  int64_t memory_hits = 0;       // Gets served from the memory tier
  int64_t disk_hits = 0;         // Gets served from RocksDB
  int64_t misses = 0;            // Gets that returned no value (corrupt ones included)
  int64_t memory_evictions = 0;
  int64_t disk_evictions = 0;
  int64_t checksum_failures = 0;  // values found corrupt on Get/Pin/open and dropped

  // Adds every field of `other` (used to sum shards).
  void Add(const StoreStats& other);
  std::string DebugString() const;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_STATS_H_
