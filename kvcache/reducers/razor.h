// RazorAttention's treatment of heads: retrieval heads keep every token; every other
// head keeps sinks and a window and replaces the dropped tokens by ONE compensation entry.
// Paper: Tang et al., "RazorAttention: Efficient KV Cache Compression Through Retrieval
// Heads", arXiv 2407.15891.
//
// The retrieval-head set is an input (the policy's `retrieval=` head set); the calibration
// pass that finds it (echo and induction scores on repeated random tokens) runs the model,
// so it lives in kvcache/razor_calibration.h (target kvspan::kvcache_runtime).
// Per span, for a non-retrieval head: sinks/window as in sinks_window.h; the compensation
// entry is the plain mean of the dropped keys and of the dropped values, at the position
// of the last dropped token, with log_count = log(#dropped) (it stands for that many
// tokens). No compensation entry when nothing is dropped.
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_RAZOR_H_
#define KVSPAN_KVCACHE_REDUCERS_RAZOR_H_

#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/sinks_window.h"

namespace kvspan::kvcache::reducers {

enum class HeadRole { kRetrieval, kOther };

// Entries in position order (the compensation entry among them).
ReducedEntries RazorReduce(const SinksWindowOptions& options, const SpanContext& ctx, HeadRole role,
                           const TokenRows& rows);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_RAZOR_H_
