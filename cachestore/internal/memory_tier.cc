#include "cachestore/internal/memory_tier.h"

#include <utility>

namespace kvspan::cachestore::internal {

std::optional<MemoryTier::Item> MemoryTier::Get(const SpanKey& key, uint64_t tick) {
  auto it = items_.find(key);
  if (it == items_.end()) return std::nullopt;
  index_.Touch(key, tick);
  return it->second;
}

bool MemoryTier::Insert(const SpanKey& key, Item item, bool pinned, uint64_t tick,
                        int64_t* num_evicted) {
  const int64_t size = static_cast<int64_t>(item.value->size());
  const LruIndex::Entry* existing = index_.Find(key);
  const bool keep_pin = pinned || (existing != nullptr && existing->pinned);
  const int64_t existing_size = existing != nullptr ? existing->size_bytes : 0;
  const int64_t pinned_other =
      index_.bytes_pinned() - (existing != nullptr && existing->pinned ? existing_size : 0);
  if (pinned_other + size > budget_bytes_) {
    Erase(key);
    return false;
  }
  // Evict until the new item fits; never the key itself (it is replaced below).
  while (index_.bytes_used() - existing_size + size > budget_bytes_) {
    std::optional<SpanKey> victim = index_.LeastRecentUnpinned();
    if (!victim.has_value()) break;
    if (*victim == key) {
      // Only the key's own older copy is left to evict: dropping it is the replacement.
      break;
    }
    Erase(*victim);
    ++*num_evicted;
  }
  if (index_.bytes_used() - existing_size + size > budget_bytes_) {
    Erase(key);
    return false;
  }
  index_.Upsert(key, size, tick);
  if (keep_pin) index_.SetPinned(key, true);
  items_[key] = std::move(item);
  return true;
}

bool MemoryTier::Erase(const SpanKey& key) {
  items_.erase(key);
  return index_.Erase(key);
}

}  // namespace kvspan::cachestore::internal
