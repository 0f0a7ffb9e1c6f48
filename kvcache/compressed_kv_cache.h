// CompressedKvCache: the KV cache of one sequence as a list of compressed spans (all
// layers) covering positions [0, num_compressed_tokens()) plus a dense fp32 tail (the
// recent window of tokens not yet in a full span). It implements model::KvCache, so the
// forward pass runs over it unchanged:
//   - AppendAndAttend appends the new tokens' K/V to the tail, then each query attends to
//     every compressed span's blocks of that layer (kernels::SpanAttention: fused
//     dequantization, log-count biases, shared blocks read through their source layer's
//     codes with per-entry scales, no mask: spans lie wholly before the queries)
//     merged by log-sum-exp with causal attention over the tail;
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
#include "kvcache/compress.h"
#include "kvcache/entry_block.h"
#include "kvcache/policy.h"
#include "kvcache/span.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/pending_tokens.h"

namespace kvspan::kvcache {

// The dense K (post-RoPE) and V of exactly one span's S tokens, all layers, borrowed for
// the duration of a Compress call: element (layer l, kv head h, token t, channel d) as in
// DenseKvView, t in [0, S).
struct DenseSpanView {
  SpanGeometry geometry;       // span_tokens = S
  int32_t first_position = 0;  // position of token 0 of the span
  int32_t span_index = 0;      // first_position / S
  DenseKvView kv;
  // The queries of the span's tokens and of the committed tokens after it (token t of the
  // view = position first_position + t), when the compressor's query_needs() asks for
  // them; null otherwise.
  const DenseQueryView* queries = nullptr;
};

// Turns one span's dense K/V into a Span. The policy engine plugs in here. A compressor
// must read only the view (causality) and return a span whose header geometry,
// first_position and span_index equal the view's. Implementations document their own
// thread safety; CompressedKvCache calls Compress from its caller's thread.
class SpanCompressor {
 public:
  virtual ~SpanCompressor() = default;
  virtual absl::StatusOr<Span> Compress(const DenseSpanView& view) = 0;
  // The queries Compress reads. With observation_tokens = w > 0 (query-aware, snapkv) the
  // cache compresses a span only once w committed tokens follow it, and passes the queries
  // of every committed tail token; the last w of them are the observation window.
  virtual QueryNeeds query_needs() const { return {}; }
};

// The first policy: every token kept, one codec (Span::FromDense). Thread-safe.
// Compresses with a policy (kvcache/policy.h) through CompressSpan (kvcache/compress.h):
// a codec-only policy such as "int4(g=32)" keeps every token; reducers shrink the span.
// Thread-safe (immutable).
class PolicySpanCompressor final : public SpanCompressor {
 public:
  struct Options {
    Policy policy;                  // from ParsePolicy; its canonical string goes in each header
    std::string model_fingerprint;  // copied to each span header
  };
  explicit PolicySpanCompressor(Options options) : options_(std::move(options)) {}
  // Errors of CompressSpan: Unimplemented for a query-aware or not yet built stage,
  // InvalidArgument for values the codec rejects.
  absl::StatusOr<Span> Compress(const DenseSpanView& view) override;
  QueryNeeds query_needs() const override { return QueryNeedsOf(options_.policy); }

 private:
  const Options options_;
};

// A borrowed kernels view of `block` (valid while `block` lives and is unchanged).
// REQUIRES: `block` owns its keys and values (not a shared block; see SpanKernelViews).
kernels::SpanBlockView ToSpanBlockView(const EntryBlock& block);

// The kernel views of every block of every head of one span, built once per span:
// a shared block's view takes its key (and, for kKeysAndValues, value) codes and params
// from block b of its source layer, and its fp16 scales decoded to float here, once, not
// per query. Owned and shared blocks then go through the same kernels::SpanAttention.
// Borrows the span's block arrays: valid while the Span lives unchanged (moving the Span
// keeps them: vectors move their buffers). Move-only (the views point into scales_).
// Thread-compatible.
class SpanKernelViews {
 public:
  // REQUIRES: ValidateSpan(span).ok().
  explicit SpanKernelViews(const Span& span);
  SpanKernelViews(SpanKernelViews&&) = default;
  SpanKernelViews& operator=(SpanKernelViews&&) = default;
  SpanKernelViews(const SpanKernelViews&) = delete;
  SpanKernelViews& operator=(const SpanKernelViews&) = delete;

  // Heap bytes of the views and the decoded scales (capacities); the span's own arrays,
  // which the views borrow, are not included.
  int64_t memory_bytes() const;

  // The views of resolved_head(layer, kv_head)'s blocks, in block order.
  const std::vector<kernels::SpanBlockView>& head(int layer, int kv_head) const {
    return heads_[static_cast<size_t>(layer) * num_kv_heads_ + kv_head];
  }

 private:
  int num_kv_heads_ = 0;
  std::vector<std::vector<kernels::SpanBlockView>> heads_;  // [layers * kv_heads]
  std::vector<std::vector<float>> scales_;  // decoded scale arrays the views point into
};

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
