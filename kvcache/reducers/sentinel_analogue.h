// Span -> k compact entries: a TRAINING-FREE ANALOGUE of sentinel-token span compression.
// Paper: Ren et al., "Context Compression for Auto-regressive Transformers with Sentinel
// Tokens", EMNLP 2023, arXiv 2310.08152.
//
// The paper trains the model to summarize a span into sentinel tokens' KV. Checkpoints
// without that training get this analogue instead, and it is labelled so: its policy name
// is `sentinel-analogue`, which every span header it writes carries. It is NOT the paper's
// method and must not be reported as such.
//
// Analogue: the m input rows (in position order) are cut into k' = min(k, m) consecutive
// chunks of near-equal size (chunk c = rows [floor(c m / k'), floor((c+1) m / k'))). Each
// chunk becomes one entry: keys and values are the weighted mean of the members with equal
// weights (1 each), the position is the chunk's last token (where a sentinel would sit),
// and log_count = log(chunk size) — normalized weights, so the entry stands for that many
// tokens (softmax-mass argument in entries.h).
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_SENTINEL_ANALOGUE_H_
#define KVSPAN_KVCACHE_REDUCERS_SENTINEL_ANALOGUE_H_

#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

// REQUIRES: num_entries >= 1. Returns min(num_entries, m) entries in position order.
ReducedEntries SentinelAnalogueReduce(int num_entries, const TokenRows& rows);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_SENTINEL_ANALOGUE_H_
