#include "cachestore/stats.h"

#include "absl/strings/str_format.h"

namespace kvspan::cachestore {

void StoreStats::Add(const StoreStats& o) {
  memory_entries += o.memory_entries;
  memory_bytes += o.memory_bytes;
  disk_entries += o.disk_entries;
  disk_bytes += o.disk_bytes;
  pinned_entries += o.pinned_entries;
  memory_hits += o.memory_hits;
  disk_hits += o.disk_hits;
  misses += o.misses;
  memory_evictions += o.memory_evictions;
  disk_evictions += o.disk_evictions;
  checksum_failures += o.checksum_failures;
}

std::string StoreStats::DebugString() const {
  return absl::StrFormat(
      "memory %d entries %d B, disk %d entries %d B, pinned %d, hits %d mem + %d disk, "
      "misses %d, evictions %d mem + %d disk, checksum failures %d",
      memory_entries, memory_bytes, disk_entries, disk_bytes, pinned_entries, memory_hits,
      disk_hits, misses, memory_evictions, disk_evictions, checksum_failures);
}

}  // namespace kvspan::cachestore
