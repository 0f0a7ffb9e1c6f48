// The KV cache of one sequence, all layers: the seam between the forward pass and the
// cache layouts. DenseKvCache is the plain fp32 layout; compressed span caches (kvcache/)
// implement the same interface.
//
// Protocol of one forward step of n new tokens at positions num_tokens() ..
// num_tokens() + n - 1:
//   for each layer l: AppendAndAttend(l, {n new q/k/v rows}, out)   // any layer order
//   PrepareCommit(n)   // every check and every fallible piece of work, staged
//   Commit(n)          // makes them visible; cannot fail after PrepareCommit(n) succeeded
// Until Commit, num_tokens() and everything a caller can observe are unchanged;
// Truncate(num_tokens()) discards appended but uncommitted tokens and staged work (the
// rollback Model::Forward uses when a step fails half-way). The two phases let a batch of
// caches commit all or nothing: Forward prepares every cache, rolls all back if one
// preparation fails, and only then commits them.
// Implementations are not thread-safe: one caller (one Forward) uses a cache at a time.
#ifndef KVSPAN_MODEL_KV_CACHE_H_
#define KVSPAN_MODEL_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "model/pending_tokens.h"

namespace kvspan::model {

// The new tokens' projections of one layer, as the forward pass lays them out: rows of a
// fused qkv matrix, so q, k and v share a row stride.
struct LayerQkv {
  int num_new = 0;             // n >= 1
  int64_t row_stride = 0;      // floats between consecutive tokens' rows
  const float* q = nullptr;    // [n, num_heads, head_dim], after RoPE, row stride row_stride
  const float* k = nullptr;    // [n, num_kv_heads, head_dim], after RoPE, row stride row_stride
  const float* v = nullptr;    // [n, num_kv_heads, head_dim], row stride row_stride
};

// The committed fp32 rows of a cache's dense part (DenseKvCache: every token;
// CompressedKvCache: the dense tail after its spans), as the span transport ships them from
// a prefill worker to a decode worker so that the receiver continues the sequence exactly
// where the sender stopped (docs/architecture.md, "Disaggregation").
struct DenseRows {
  int first_position = 0;  // position of row 0
  int num_tokens = 0;
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_heads = 0;
  int head_dim = 0;
  std::vector<float> k;  // [num_layers][num_tokens][num_kv_heads][head_dim], after RoPE
  std::vector<float> v;  // same layout
  // [num_layers][num_tokens][num_heads][head_dim], after RoPE: kept only by caches whose
  // compressor reads queries (query-aware policies); empty otherwise.
  std::vector<float> q;
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  // Committed tokens: the cache holds positions 0 .. num_tokens() - 1.
  virtual int num_tokens() const = 0;

  // Stores the n = in.num_new new keys and values of `layer` at positions num_tokens() ..
  // num_tokens() + n - 1, and writes to `out` ([n, num_heads * head_dim], contiguous) the
  // attention of the n new queries over the sequence: query j sees positions
  // <= num_tokens() + j, and only the last sliding_window of them when the model has a
  // window. Appending to a layer again before Commit replaces that layer's pending tokens.
  // `pool` (borrowed for the call, may be null) parallelizes the attention.
  // ResourceExhausted when the n tokens do not fit; InvalidArgument for a bad layer or n.
  virtual absl::Status AppendAndAttend(int layer, const LayerQkv& in, float* out, ThreadPool* pool) = 0;

  // Phase one of committing the n pending tokens: every check and every piece of work that
  // can fail (e.g. compressing the spans the tokens complete), into staged state that is
  // not yet visible. FailedPrecondition unless every layer took exactly n new tokens since
  // the last Commit/Truncate; an implementation's own errors with their own codes. On
  // error nothing visible changes (the tokens stay pending; Truncate drops them). An
  // AppendAndAttend after it cancels the preparation.
  virtual absl::Status PrepareCommit(int n) = 0;

  // Makes the n pending tokens visible. After a successful PrepareCommit(n) (and no
  // AppendAndAttend since) it applies the staged state and returns OK: it cannot fail.
  // Without one it runs PrepareCommit(n) first and returns its error, changing nothing
  // visible (for callers that use a cache alone).
  virtual absl::Status Commit(int n) = 0;

  // Drops committed tokens past `num_tokens`, all pending ones and any staged state.
  // REQUIRES: num_tokens >= 0. A value >= num_tokens() only drops the pending tokens.
  virtual void Truncate(int num_tokens) = 0;

  // Bytes of heap memory the cache holds right now, measured from its buffers at their
  // allocated capacity (K/V arrays, queries, compressed spans and their kernel views,
  // per-token metadata, staged state), not estimated from the geometry: what a KV memory
  // budget sums over sequences. The O(num_layers) pending-token counters and the object
  // itself are not counted.
  virtual int64_t memory_bytes() const = 0;

  // The committed dense rows (DenseRows). Unimplemented by default (caches that cannot be
  // shipped). FailedPrecondition while tokens are pending.
  virtual absl::StatusOr<DenseRows> ExportDenseRows() const;
  // Appends `rows` as committed tokens, as if they had been committed here.
  // InvalidArgument unless rows.first_position == num_tokens(), the rows' geometry is this
  // cache's, the arrays have their sizes (q present exactly when this cache keeps queries)
  // and the implementation can take them without compressing (CompressedKvCache: only into
  // an empty tail, fewer tokens than would complete a span); ResourceExhausted past the
  // capacity; FailedPrecondition while tokens are pending. On error nothing changes.
  virtual absl::Status ImportDenseRows(const DenseRows& rows);
};

// OK when `rows` has `geometry`'s layers, heads and head_dim and arrays of their sizes
// (with_queries: q too, else q empty); InvalidArgument naming the first mismatch.
absl::Status CheckDenseRows(const DenseRows& rows, int num_layers, int num_kv_heads, int num_heads, int head_dim,
                            bool with_queries);

// fp32 K and V laid out [layer][kv_head][capacity][head_dim]. Not thread-safe.
class DenseKvCache final : public KvCache {
 public:
  struct Options {
    int num_layers = 0;      // >= 1
    int num_heads = 0;       // query heads, a multiple of num_kv_heads
    int num_kv_heads = 0;    // >= 1
    int head_dim = 0;        // >= 1
    int capacity_tokens = 0; // >= 1: positions the cache can hold
    int sliding_window = 0;  // 0 = full causal attention
  };

  // InvalidArgument for a field out of range; ResourceExhausted when the memory
  // (2 * num_layers * num_kv_heads * capacity_tokens * head_dim floats) cannot be allocated.
  static absl::StatusOr<std::unique_ptr<DenseKvCache>> Create(const Options& options);

  int num_tokens() const override { return num_tokens_; }
  absl::Status AppendAndAttend(int layer, const LayerQkv& in, float* out, ThreadPool* pool) override;
  // Checks only (FailedPrecondition as KvCache::PrepareCommit); nothing to stage.
  absl::Status PrepareCommit(int n) override;
  absl::Status Commit(int n) override;
  void Truncate(int num_tokens) override;
  // The two K/V allocations, 2 * num_layers * num_kv_heads * capacity_tokens * head_dim
  // floats, whatever num_tokens() is (allocated at Create).
  int64_t memory_bytes() const override { return 2 * buffer_floats_ * static_cast<int64_t>(sizeof(float)); }
  // Every committed token (first_position 0); no queries.
  absl::StatusOr<DenseRows> ExportDenseRows() const override;
  absl::Status ImportDenseRows(const DenseRows& rows) override;

  int capacity_tokens() const { return options_.capacity_tokens; }
  const Options& options() const { return options_; }
  // Committed key/value `token` of (layer, kv_head): head_dim floats (for tests and tools).
  // REQUIRES: indices in range, token < num_tokens().
  const float* key(int layer, int kv_head, int token) const;
  const float* value(int layer, int kv_head, int token) const;
  // The same rows, writable: lets a caller replace committed keys/values, e.g. with a
  // compressed span's dequantized entries (the exact meaning of attention over spans).
  // REQUIRES: indices in range, token < num_tokens().
  float* mutable_key(int layer, int kv_head, int token);
  float* mutable_value(int layer, int kv_head, int token);

 private:
  explicit DenseKvCache(const Options& options);
  int64_t Offset(int layer, int kv_head, int token) const;

  const Options options_;
  std::unique_ptr<float[]> keys_;    // [num_layers][num_kv_heads][capacity][head_dim]
  std::unique_ptr<float[]> values_;  // same
  int64_t buffer_floats_ = 0;        // floats allocated for keys_, and for values_
  int num_tokens_ = 0;
  PendingTokens pending_;            // tokens appended since the last Commit
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_KV_CACHE_H_
