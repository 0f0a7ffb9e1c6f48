// MemoryTier: the bounded in-memory tier in front of RocksDB. Holds verified values as
// shared_ptrs to immutable buffers (a Get hands out the same buffer, no copy), bounded
// by bytes, LRU eviction, pinned entries exempt (docs/cachestore.md, "Capacity").
// Not thread-safe: CacheStore serializes access with its mu_.
#ifndef KVSPAN_CACHESTORE_INTERNAL_MEMORY_TIER_H_
#define KVSPAN_CACHESTORE_INTERNAL_MEMORY_TIER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "cachestore/internal/lru_index.h"
#include "cachestore/span_key.h"

namespace kvspan::cachestore::internal {

class MemoryTier {
 public:
  struct Item {
    std::shared_ptr<const std::string> value;
    uint64_t checksum = 0;
  };

  explicit MemoryTier(int64_t budget_bytes) : budget_bytes_(budget_bytes) {}

  // The item for `key` (marked most recent), or nullopt.
  std::optional<Item> Get(const SpanKey& key, uint64_t tick);

  // Inserts or replaces `key`, evicting least recent unpinned entries to make room.
  // If it cannot fit (larger than the budget, or the rest is pinned) nothing is
  // inserted, an older copy of `key` is dropped, and false is returned. A pinned item
  // (`pinned`) keeps an existing pin of `key`. Adds the evictions to *num_evicted.
  bool Insert(const SpanKey& key, Item item, bool pinned, uint64_t tick, int64_t* num_evicted);

  // Whether `size_bytes` more pinned bytes fit in the budget.
  bool CanPin(int64_t size_bytes) const {
    return index_.bytes_pinned() + size_bytes <= budget_bytes_;
  }
  bool SetPinned(const SpanKey& key, bool pinned) { return index_.SetPinned(key, pinned); }
  bool Erase(const SpanKey& key);
  bool Contains(const SpanKey& key) const { return index_.Contains(key); }

  int64_t num_entries() const { return index_.num_entries(); }
  int64_t bytes_used() const { return index_.bytes_used(); }
  int64_t budget_bytes() const { return budget_bytes_; }

 private:
  const int64_t budget_bytes_;
  LruIndex index_;
  absl::flat_hash_map<SpanKey, Item> items_;
};

}  // namespace kvspan::cachestore::internal

#endif  // KVSPAN_CACHESTORE_INTERNAL_MEMORY_TIER_H_
