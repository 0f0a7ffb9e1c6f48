#include "cachestore/internal/lru_index.h"

namespace kvspan::cachestore::internal {

LruIndex::Entry& LruIndex::Upsert(const SpanKey& key, int64_t size_bytes, uint64_t access_tick) {
  auto [it, inserted] = map_.try_emplace(key);
  Entry& e = it->second;
  if (inserted) {
    lru_.push_front(key);
    e.lru_pos = lru_.begin();
  } else {
    bytes_used_ -= e.size_bytes;
    if (e.pinned) {
      bytes_pinned_ -= e.size_bytes;
    } else {
      lru_.splice(lru_.begin(), lru_, e.lru_pos);
    }
  }
  e.size_bytes = size_bytes;
  e.access_tick = access_tick;
  bytes_used_ += size_bytes;
  if (e.pinned) bytes_pinned_ += size_bytes;
  return e;
}

bool LruIndex::Touch(const SpanKey& key, uint64_t access_tick) {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  Entry& e = it->second;
  e.access_tick = access_tick;
  if (!e.pinned) lru_.splice(lru_.begin(), lru_, e.lru_pos);
  return true;
}

bool LruIndex::Erase(const SpanKey& key) {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  Entry& e = it->second;
  bytes_used_ -= e.size_bytes;
  if (e.pinned) {
    bytes_pinned_ -= e.size_bytes;
    --num_pinned_;
  } else {
    lru_.erase(e.lru_pos);
  }
  map_.erase(it);
  return true;
}

bool LruIndex::SetPinned(const SpanKey& key, bool pinned) {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  Entry& e = it->second;
  if (e.pinned == pinned) return true;
  e.pinned = pinned;
  if (pinned) {
    lru_.erase(e.lru_pos);
    bytes_pinned_ += e.size_bytes;
    ++num_pinned_;
  } else {
    lru_.push_front(key);
    e.lru_pos = lru_.begin();
    bytes_pinned_ -= e.size_bytes;
    --num_pinned_;
  }
  return true;
}

const LruIndex::Entry* LruIndex::Find(const SpanKey& key) const {
  auto it = map_.find(key);
  return it == map_.end() ? nullptr : &it->second;
}

LruIndex::Entry* LruIndex::FindMutable(const SpanKey& key) {
  auto it = map_.find(key);
  return it == map_.end() ? nullptr : &it->second;
}

std::optional<SpanKey> LruIndex::LeastRecentUnpinned() const {
  if (lru_.empty()) return std::nullopt;
  return lru_.back();
}

}  // namespace kvspan::cachestore::internal
