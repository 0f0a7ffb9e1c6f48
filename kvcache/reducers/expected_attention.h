// Expected-attention eviction: keep the tokens that FUTURE queries are expected to attend
// to, estimated from a Gaussian model of the queries.
// Paper: Devoto et al., "Expected Attention: KV Cache Compression by Estimating Attention
// from Future Queries Distribution", arXiv 2510.00636 (kvpress ExpectedAttentionPress).
//
// Query-agnostic in the sense that matters for storage: the statistics come from the
// queries of the span's OWN tokens (never from later tokens or from a question), so a span
// compressed this way is valid for every continuation and may be stored.
//
// Per KV head, with the n own query tokens x `group` query heads of the GQA group:
//   1. un-rotate each post-RoPE query to its pre-RoPE form (rotate-half RoPE with the
//      model's inv_freq; an empty inv_freq means no RoPE);
//   2. mu = mean, Sigma = covariance (population, D x D) of those pre-RoPE queries, per query
//      head;
//   3. the average rotation over the next `future` positions P = span_end .. span_end +
//      future - 1: per frequency pair i, c_i = mean cos(f_i P), s_i = mean sin(f_i P), the
//      2x2 matrix R_i = [[c_i, -s_i], [s_i, c_i]]; mu' = R mu, Sigma' = R Sigma R^T;
//   4. q ~ N(mu', Sigma') gives E[exp(<q, k> / sqrt(D))] = exp(<mu', k> / sqrt(D) +
//      k^T Sigma' k / (2 D)): the expected logit of key k is that exponent;
//   5. score_i = sum over the group's heads of softmax_i(expected logit) * ||v_i|| (the
//      paper's value-norm weighting: the expected contribution to the output), over the m
//      candidate rows;
//   6. keep the KeepCount(keep, m) highest scores (ties: earlier position), unchanged.
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_EXPECTED_ATTENTION_H_
#define KVSPAN_KVCACHE_REDUCERS_EXPECTED_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

// The RoPE rotations one span's heads share, computed once per span: per own query token
// (its position) the angles to un-rotate it, and the average rotation over the future
// positions. Empty vectors mean no RoPE.
struct ExpectedAttentionRope {
  std::vector<double> query_cos, query_sin;    // [num_queries * D/2]: cos/sin(position_j * f_i)
  std::vector<double> future_cos, future_sin;  // [D/2]: mean over P of cos/sin(P * f_i)
};
// `inv_freq` [D/2] (empty: no RoPE), the own queries' positions, and the future positions
// P = span_end .. span_end + future - 1 (future >= 1).
ExpectedAttentionRope MakeExpectedAttentionRope(absl::Span<const float> inv_freq,
                                                absl::Span<const int32_t> query_positions, int32_t span_end,
                                                int future);

struct ExpectedAttentionOptions {
  double keep = 0.5;                          // (0, 1]
  const ExpectedAttentionRope* rope = nullptr;  // null: no RoPE
};

// The scores of the rows (exposed for tests). REQUIRES: own.head_dim == rows.head_dim,
// own.num_tokens() >= 1; with `rope`, D even and tables for own.num_tokens() queries.
std::vector<double> ExpectedAttentionScores(const ExpectedAttentionOptions& options,
                                            const QueryRows& own, const TokenRows& rows);

// The kept rows, in position order, log_count 0.
ReducedEntries ExpectedAttentionReduce(const ExpectedAttentionOptions& options,
                                       const QueryRows& own, const TokenRows& rows);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_EXPECTED_ATTENTION_H_
