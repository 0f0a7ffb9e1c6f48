// SnapKV: keep the tokens that an observation window of queries attends to.
// Paper: Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation",
// arXiv 2404.14469.
//
// Query-AWARE: the votes come from the queries of the observation window (the last `obs`
// tokens before the compression point, e.g. the question at the end of a prompt), so a
// span compressed this way depends on tokens after it. Such spans serve the decode-side
// working set of ONE sequence and are never written to the cache store (the policy's
// query_agnostic() is false).
//
// Per KV head, over the m candidate rows of one span:
//   p_r = softmax_i(<q_r, k_i> / sqrt(D))   for every observation query row r (each
//         observation token x each query head of the GQA group), normalized over the m
//         candidates of this span (the span-local form: a span never sees other spans);
//   vote_i = sum_r p_r[i];
//   pooled_i = max of vote over candidates [i - pool/2, i + pool/2] (1-D max pooling in
//         candidate order, so clustered neighbours of a voted token survive together);
//   keep the KeepCount(keep, m) highest pooled votes (ties: earlier position), unchanged.
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_SNAPKV_H_
#define KVSPAN_KVCACHE_REDUCERS_SNAPKV_H_

#include <vector>

#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

struct SnapKvOptions {
  double keep = 0.5;  // (0, 1]
  int pool = 7;       // max-pooling kernel size, >= 1
};

// The pooled votes of the rows (exposed for tests). REQUIRES: obs.head_dim == rows.head_dim.
std::vector<double> SnapKvScores(const SnapKvOptions& options, const QueryRows& obs,
                                 const TokenRows& rows);

// The kept rows, in position order, log_count 0.
ReducedEntries SnapKvReduce(const SnapKvOptions& options, const QueryRows& obs,
                            const TokenRows& rows);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_SNAPKV_H_
