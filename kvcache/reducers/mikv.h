// MiKV mixed precision: important entries keep a high-precision codec, the rest a low one;
// nothing is dropped.
// Paper: Yang et al., "No Token Left Behind: Reliable KV Cache Compression via
// Importance-Aware Mixed Precision Quantization", arXiv 2402.18096.
//
// MiKV ranks importance by accumulated attention, which needs queries; this query-agnostic
// version ranks by key norm (lowest L2 norm = most important, arXiv 2406.11430). The top
// KeepCount(high_fraction, n) entries are important. Encoding is EncodeMixedHead (span.h).
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_MIKV_H_
#define KVSPAN_KVCACHE_REDUCERS_MIKV_H_

#include <cstdint>
#include <vector>

#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

// important[i] = 1 for the KeepCount(high_fraction, n) entries with the lowest key norm
// (ties: earlier entry), 0 otherwise. high_fraction in [0, 1].
std::vector<uint8_t> MikvImportance(const ReducedEntries& entries, double high_fraction);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_MIKV_H_
