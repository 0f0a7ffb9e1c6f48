#include "kvcache/reducers/mikv.h"

#include "kvcache/reducers/key_norm.h"

namespace kvspan::kvcache::reducers {

std::vector<uint8_t> MikvImportance(const ReducedEntries& entries, double high_fraction) {
  const TokenRows rows{entries.head_dim, entries.positions, entries.keys, entries.values};
  std::vector<uint8_t> important(entries.size(), 0);
  for (int i : LowestKeyNormRows(rows, KeepCount(high_fraction, rows.size()))) {
    important[i] = 1;
  }
  return important;
}

}  // namespace kvspan::kvcache::reducers
