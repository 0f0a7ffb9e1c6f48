// Key-norm eviction: keep the keys with the LOWEST L2 norm.
// Paper: Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache
// Compression", arXiv 2406.11430 (low key norm correlates with high attention).
// Query-agnostic: reads keys only.
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_KEY_NORM_H_
#define KVSPAN_KVCACHE_REDUCERS_KEY_NORM_H_

#include <cstdint>
#include <vector>

#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

// Indices (into `rows`) of the `keep` rows with the smallest key L2 norm; ties go to the
// earlier position. Returned in increasing index (position) order. REQUIRES: keep <= m.
std::vector<int> LowestKeyNormRows(const TokenRows& rows, int keep);

// Keeps KeepCount(keep_ratio, m) rows with the lowest key norm, unchanged (log_count 0),
// in position order.
ReducedEntries KeyNormReduce(const TokenRows& rows, double keep_ratio);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_KEY_NORM_H_
