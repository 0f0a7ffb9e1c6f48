// KVMerger-style merging of runs of similar adjacent keys.
// Paper: Wang et al., "Model Tells You Where to Merge: Adaptive KV Cache Merging for LLMs
// on Long-Context Tasks", arXiv 2407.08454.
//
// Query-agnostic variant, as implemented here:
//   1. Merging sets: rows i and i+1 are linked when their positions are adjacent
//      (p[i+1] == p[i] + 1) and cos(k[i], k[i+1]) >= similarity_threshold. Maximal chains
//      of links are the runs; a run of one row is kept unchanged.
//   2. Pivot: the paper picks the member with the highest attention score, which needs a
//      query; here the pivot is the run's medoid — the member with the largest summed
//      cosine similarity to the other members (ties: earliest).
//   3. Gaussian-kernel weights around the pivot: w_j = exp(-||k_j - k_p||^2 / (2 sigma^2)),
//      merged k = sum_j w_j k_j / sum_j w_j, merged v alike (w_p = 1).
//   4. The merged entry sits at the pivot's position and has log_count = log(run length):
//      the weights are normalized, so the entry stands for n tokens and adding log n to its
//      logit gives it n times the mass of one token — exactly the members' mass when their
//      keys are identical.
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_KVMERGER_H_
#define KVSPAN_KVCACHE_REDUCERS_KVMERGER_H_

#include <utility>
#include <vector>

#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

struct KvMergerOptions {
  double similarity_threshold = 0.9;  // cosine, in [-1, 1]
  double sigma = 1.0;                 // Gaussian kernel width, > 0
};

// The runs: [begin, end) row ranges covering rows 0..m-1 in order (singletons included).
std::vector<std::pair<int, int>> KvMergerRuns(const KvMergerOptions& options,
                                              const TokenRows& rows);

// The pivot row of run [begin, end) (see 2. above).
int KvMergerPivot(const TokenRows& rows, int begin, int end);

// One entry per run, in position order.
ReducedEntries KvMergerReduce(const KvMergerOptions& options, const TokenRows& rows);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_KVMERGER_H_
