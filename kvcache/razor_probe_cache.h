// RazorProbeCache: the probing model::KvCache of RazorAttention's calibration pass
// (Tang et al., "RazorAttention: Efficient KV Cache Compression Through Retrieval Heads",
// arXiv 2407.15891, section 3.2). It wraps a model::DenseKvCache, which stores the keys and
// values and computes the attention output (so a forward pass through the probe is
// bit-identical to one through the plain dense cache), and in addition measures, for every
// query head and every query at a scored position, where the query's softmax attention
// goes on a sequence of repeated segments of L tokens:
//
//   echo(p)      = P(key p - L | query p)       the previous occurrence of the same token
//   induction(p) = P(key p - L + 1 | query p)   the token that followed that occurrence
//
// The probabilities are recomputed in double precision from the same post-RoPE q and k
// the dense attention reads, with the same scale 1/sqrt(head_dim) and the same visible
// keys (causal, and only the last sliding_window keys when the model has a window; a key
// outside the window has probability 0).
//
// Scores of a step are pending until Commit (discarded by Truncate), so a forward step
// that fails half-way (or in another cache's PrepareCommit) and is rolled back leaves no
// trace in the scores. Committed scores
// stay when Truncate drops committed tokens (calibration never does).
// Not thread-safe (the model::KvCache contract).
#ifndef KVSPAN_KVCACHE_RAZOR_PROBE_CACHE_H_
#define KVSPAN_KVCACHE_RAZOR_PROBE_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/kv_cache.h"

namespace kvspan::kvcache {

// Echo and induction probability of ONE query at `position` whose softmax row over the
// keys [first_key, position] is `probs` (probs.size() == position - first_key + 1).
// A target key before first_key (outside the window or before the sequence) counts 0.
// REQUIRES: segment_tokens >= 2, first_key >= 0, probs.size() == position - first_key + 1.
struct EchoInduction {
  double echo = 0.0;
  double induction = 0.0;
};
EchoInduction ScoreQueryRow(absl::Span<const double> probs, int first_key, int position,
                            int segment_tokens);

class RazorProbeCache final : public model::KvCache {
 public:
  // Called with each scored query's probability row (double precision, over the keys
  // [first_key, position]): a hook for tests. Borrowed views, valid for the call.
  using RowObserver = std::function<void(int layer, int head, int position, int first_key,
                                         absl::Span<const double> probs)>;

  struct Options {
    int segment_tokens = 0;         // L >= 2: the length of the repeated segment
    int first_scored_position = 0;  // >= segment_tokens - 1: queries at positions >= this are
                                    // scored (the start of the 2nd repetition)
    RowObserver observer;           // optional
  };

  // Takes ownership of `dense`. InvalidArgument for a null cache or options out of range.
  static absl::StatusOr<std::unique_ptr<RazorProbeCache>> Create(
      std::unique_ptr<model::DenseKvCache> dense, Options options);

  int num_tokens() const override { return dense_->num_tokens(); }
  // Delegates to the dense cache (same output), then scores the new queries at positions
  // >= first_scored_position (pending until Commit). Errors are the dense cache's.
  absl::Status AppendAndAttend(int layer, const model::LayerQkv& in, float* out,
                               ThreadPool* pool) override;
  // The dense cache's checks; the scores need no fallible work. Commit then adds the
  // pending scores (it fails only as the dense cache's Commit does, changing nothing).
  absl::Status PrepareCommit(int n) override { return dense_->PrepareCommit(n); }
  absl::Status Commit(int n) override;
  void Truncate(int num_tokens) override;
  // The dense cache's bytes plus the score sums.
  int64_t memory_bytes() const override;

  const model::DenseKvCache& dense() const { return *dense_; }

  // Committed scored queries (per layer; the same for every layer after a Commit).
  int64_t num_scored_queries() const { return num_scored_; }
  // Mean echo / induction probability over the committed scored queries, per query head:
  // [num_layers * num_heads], index layer * num_heads + head. Zeros before any scored query.
  std::vector<double> MeanEcho() const { return Mean(echo_sum_); }
  std::vector<double> MeanInduction() const { return Mean(induction_sum_); }

 private:
  RazorProbeCache(std::unique_ptr<model::DenseKvCache> dense, Options options);

  std::unique_ptr<model::DenseKvCache> dense_;
  const Options options_;
  void ClearPending();
  std::vector<double> Mean(const std::vector<double>& sums) const;
  // Committed sums and the pending sums of the current step, [num_layers * num_heads].
  std::vector<double> echo_sum_, induction_sum_;
  std::vector<double> pending_echo_, pending_induction_;
  int64_t num_scored_ = 0;
};

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_RAZOR_PROBE_CACHE_H_
