// CompressedKvCache: the KV cache of one sequence as a list of compressed spans (all
// layers) covering positions [0, num_compressed_tokens()) plus a dense fp32 tail (the
// recent window of tokens not yet in a full span). It implements model::KvCache, so the
// forward pass runs over it unchanged:
//   - AppendAndAttend appends the new tokens' K/V to the tail, then each query attends to
//     every compressed span's blocks of that layer (kernels::SpanAttention: fused
//     dequantization, log-count biases, shared blocks read through their source layer's
//     codes with per-entry scales, no mask: spans lie wholly before the queries)
//     merged by log-sum-exp with causal attention over the tail. The pool's tasks are
//     (KV head, chunk of queries, range of spans): a decode step with few KV heads splits
//     its spans too, by a rule of the shape alone, so results do not depend on threads;
//   - PrepareCommit(n), after all layers, compresses every span the n pending tokens
//     complete (the oldest S tail tokens, while the tail would hold >= S committed tokens)
//     with the sequence's SpanCompressor into staged spans, not yet visible; Commit(n)
//     then moves them into spans() and their tokens out of the tail ("incremental
//     compression" during decode; a prefill chunk compresses every full span it completes).
//   - FromSpans builds a cache over existing spans (e.g. loaded from the cache store):
//     later prefill chunks then attend to the compressed prefix.
// Causality: span i is compressed from its own S tokens only, at the Commit that completes
// it, so its bytes do not depend on later tokens.
// Truncation reaches only the dense tail: compressed tokens cannot be un-compressed.
//
// Lives in target kvspan::kvcache_runtime (links kvcache, kernels and model); the
// kvspan::kvcache library itself does not depend on model/.
// Not thread-safe (the model::KvCache contract: one Forward at a time).
#ifndef KVSPAN_KVCACHE_COMPRESSED_KV_CACHE_H_
#define KVSPAN_KVCACHE_COMPRESSED_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/span_attention.h"
#include "kvcache/span.h"
#include "kvcache/span_compressor.h"
#include "kvcache/span_kernel_views.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/pending_tokens.h"

namespace kvspan::kvcache {

// The checks a cache makes of the spans it starts from (CompressedKvCache::FromSpans, the GPU
// cache's too): spans.size() * S <= capacity_tokens, and span i has `geometry`, first_position
// i * S and span_index i, and passes ValidateSpan. InvalidArgument, naming `who`.
absl::Status CheckPrefixSpans(const std::vector<Span>& spans, const SpanGeometry& geometry, int capacity_tokens,
                              const char* who);

class CompressedKvCache final : public model::KvCache {
 public:
  struct Options {
    int num_layers = 0;       // >= 1
    int num_heads = 0;        // query heads, a multiple of num_kv_heads
    int num_kv_heads = 0;     // >= 1
    int head_dim = 0;         // >= 1
    int span_tokens = 64;     // S, [1, kMaxSpanTokens]
    int capacity_tokens = 0;  // >= 1: positions the sequence may reach
    int sliding_window = 0;   // the model's window (0 = none): a query at position p sees only
                              // entries and tail tokens at positions > p - sliding_window
    // The model's RoPE frequencies ([head_dim / 2]; empty = no RoPE), passed to query-reading
    // compressors (expected-attn).
    std::vector<float> rope_inv_freq;
    // How queries meet the keys of int8/int4/int2 spans: int8 queries per key group with
    // exact integer sums (kernels::SpanKeyDot::kInt8Query, the default: faster, logit error
    // bound in kernels/span_attention.h) or fp32 (kFloat: exact up to fp32 rounding).
    kernels::SpanKeyDot span_key_dot = kernels::SpanKeyDot::kInt8Query;
  };
  // Options for `config`'s geometry, sliding window and RoPE frequencies.
  static Options OptionsFor(const model::ModelConfig& config, int span_tokens, int capacity_tokens);

  // An empty cache. InvalidArgument for an option out of range or a null compressor.
  static absl::StatusOr<std::unique_ptr<CompressedKvCache>> Create(const Options& options,
                                                                    std::shared_ptr<SpanCompressor> compressor);

  // A cache whose committed tokens are the given spans (span i covers [i*S, (i+1)*S));
  // the next token appended sits at position spans.size() * S. InvalidArgument when a
  // span's geometry differs from the options, its first_position / span_index are not
  // i*S / i, it fails ValidateSpan, or spans.size() * S > capacity_tokens.
  static absl::StatusOr<std::unique_ptr<CompressedKvCache>> FromSpans(const Options& options,
                                                                       std::shared_ptr<SpanCompressor> compressor,
                                                                       std::vector<Span> spans);

  // model::KvCache. AppendAndAttend: InvalidArgument for a bad layer or n < 1;
  // ResourceExhausted past capacity_tokens. PrepareCommit: FailedPrecondition unless every
  // layer took exactly n tokens; an error of the compressor (as it returned it) or
  // Internal for a span that breaks the SpanCompressor contract. On error no token is
  // committed and no span staged: the n tokens stay pending (Truncate drops them; a
  // retried Commit compresses again). Commit: PrepareCommit's errors when not prepared;
  // cannot fail after a successful PrepareCommit(n).
  int num_tokens() const override { return num_tokens_; }
  absl::Status AppendAndAttend(int layer, const model::LayerQkv& in, float* out, ThreadPool* pool) override;
  absl::Status PrepareCommit(int n) override;
  absl::Status Commit(int n) override;
  // Drops pending tokens and staged spans, and committed tokens past `num_tokens` when they
  // are all in the dense tail. A target inside the compressed prefix changes no committed token (see
  // TruncateTo); Forward's rollback only drops pending tokens, which is always possible.
  void Truncate(int num_tokens) override;
  // As Truncate, but FailedPrecondition (and no change at all) when
  // num_tokens < num_compressed_tokens(); InvalidArgument when num_tokens < 0.
  absl::Status TruncateTo(int num_tokens);
  // The dense tail's K/V (and query) buffers at their capacity, every span
  // (SpanMemoryBytes) and its kernel views, staged spans, the containers' slack and the
  // RoPE frequencies.
  int64_t memory_bytes() const override;
  // The dense tail: first_position num_compressed_tokens(), queries when the compressor
  // reads them.
  absl::StatusOr<model::DenseRows> ExportDenseRows() const override;
  // Only into an empty tail (num_tokens() == num_compressed_tokens()), fewer rows than would
  // complete a span (S + the compressor's observation window), queries exactly when the
  // compressor reads them: what ExportDenseRows of a cache of the same options gives.
  absl::Status ImportDenseRows(const model::DenseRows& rows) override;

  const Options& options() const { return options_; }
  const std::vector<Span>& spans() const { return spans_; }
  int num_compressed_tokens() const { return static_cast<int>(spans_.size()) * options_.span_tokens; }
  int num_tail_tokens() const { return num_tokens_ - num_compressed_tokens(); }

 private:
  CompressedKvCache(const Options& options, std::shared_ptr<SpanCompressor> compressor);
  // Grows the tail buffer to hold `tokens` tokens per layer, keeping its contents.
  void ReserveTail(int tokens);
  float* TailKey(int layer, int token) { return &tail_k_[TailOffset(layer, token)]; }
  float* TailValue(int layer, int token) { return &tail_v_[TailOffset(layer, token)]; }
  // Queries, [num_layers][tail_capacity_][num_heads][head_dim]; kept only when the
  // compressor reads queries (needs_.any()).
  float* TailQuery(int layer, int token) {
    return &tail_q_[(int64_t{layer} * tail_capacity_ + token) * options_.num_heads * options_.head_dim];
  }
  int64_t TailOffset(int layer, int token) const {
    return (int64_t{layer} * tail_capacity_ + token) * options_.num_kv_heads * options_.head_dim;
  }
  void ClearStaged();

  const Options options_;
  const std::shared_ptr<SpanCompressor> compressor_;
  std::vector<Span> spans_;  // span i covers positions [i*S, (i+1)*S)
  std::vector<SpanKernelViews> views_;  // views_[i] borrows spans_[i]
  // Set by PrepareCommit: the spans the pending tokens complete, in order, and their views
  // (staged_views_[i] borrows staged_spans_[i]); moved into spans_ / views_ by Commit.
  std::vector<Span> staged_spans_;
  std::vector<SpanKernelViews> staged_views_;
  // Dense tail, [num_layers][tail_capacity_][num_kv_heads][head_dim]: token t is position
  // num_compressed_tokens() + t; committed tokens first, then each layer's pending ones.
  std::vector<float> tail_k_;
  std::vector<float> tail_v_;
  std::vector<float> tail_q_;
  int tail_capacity_ = 0;
  const QueryNeeds needs_;
  int num_tokens_ = 0;
  model::PendingTokens pending_;
};

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_COMPRESSED_KV_CACHE_H_
