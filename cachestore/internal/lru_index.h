// LruIndex: the bookkeeping of one byte-bounded LRU tier: key -> size, pinned flag and
// recency. Pinned entries are kept out of the recency list, so they are never chosen
// as victims. The index holds no values and does no I/O; the tier that owns it decides
// what to do with the victims it names.
// Not thread-safe: the owner serializes access (CacheStore holds its mu_).
#ifndef KVSPAN_CACHESTORE_INTERNAL_LRU_INDEX_H_
#define KVSPAN_CACHESTORE_INTERNAL_LRU_INDEX_H_

#include <cstdint>
#include <list>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "cachestore/span_key.h"

namespace kvspan::cachestore::internal {

class LruIndex {
 public:
  struct Entry {
    int64_t size_bytes = 0;
    bool pinned = false;
    uint64_t access_tick = 0;     // last access (a store-wide counter, not a clock)
    uint64_t persisted_tick = 0;  // access_tick as last written to disk (disk tier only)
    std::list<SpanKey>::iterator lru_pos;  // valid only when !pinned
  };

  // Inserts `key` as the most recent entry, or updates its size and recency if present
  // (its pinned flag is kept). Returns the entry.
  Entry& Upsert(const SpanKey& key, int64_t size_bytes, uint64_t access_tick);
  // Marks `key` most recently used. Returns false if absent.
  bool Touch(const SpanKey& key, uint64_t access_tick);
  // Removes `key`. Returns false if absent.
  bool Erase(const SpanKey& key);
  // Sets the pinned flag. Returns false if absent. Unpinning makes the entry most recent.
  bool SetPinned(const SpanKey& key, bool pinned);

  // The entry for `key`, or nullptr. The pointer is valid until the next mutation.
  const Entry* Find(const SpanKey& key) const;
  Entry* FindMutable(const SpanKey& key);
  bool Contains(const SpanKey& key) const { return map_.contains(key); }

  // The least recently used unpinned key, if any.
  std::optional<SpanKey> LeastRecentUnpinned() const;

  int64_t num_entries() const { return static_cast<int64_t>(map_.size()); }
  int64_t num_pinned() const { return num_pinned_; }
  int64_t bytes_used() const { return bytes_used_; }
  int64_t bytes_pinned() const { return bytes_pinned_; }

  // Calls fn(key, entry) for every entry, in no particular order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [key, entry] : map_) fn(key, entry);
  }

 private:
  absl::flat_hash_map<SpanKey, Entry> map_;
  std::list<SpanKey> lru_;  // front = most recent; unpinned entries only
  int64_t num_pinned_ = 0;
  int64_t bytes_used_ = 0;
  int64_t bytes_pinned_ = 0;
};

}  // namespace kvspan::cachestore::internal

#endif  // KVSPAN_CACHESTORE_INTERNAL_LRU_INDEX_H_
