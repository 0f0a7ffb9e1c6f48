// CachePolicy: how the KV cache of one served sequence is kept — "dense" (the model's
// plain fp32 DenseKvCache: nothing compressed, nothing stored) or a compression policy
// string (kvcache/README.md, "Policy strings") run span by span by a CompressedKvCache.
// The serving node resolves each request's policy string into one of these once, shares it
// between the requests that use it, and asks it for caches.
//
// Lives in target kvspan::kvcache_runtime. Thread-safe (immutable after Resolve).
#ifndef KVSPAN_KVCACHE_CACHE_POLICY_H_
#define KVSPAN_KVCACHE_CACHE_POLICY_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/policy.h"
#include "kvcache/span.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace kvspan::kvcache {

// The policy string that names the uncompressed cache.
inline constexpr absl::string_view kDensePolicy = "dense";

class CachePolicy {
 public:
  // Resolves `text` for a model with `config` (whose fingerprint goes into span headers) and
  // spans of `span_tokens` tokens. InvalidArgument (from ParsePolicy: naming the token and
  // its position) for a bad policy string; NotFound for an unreadable `@file`.
  static absl::StatusOr<std::shared_ptr<const CachePolicy>> Resolve(absl::string_view text,
                                                                    const model::ModelConfig& config,
                                                                    int span_tokens);

  bool dense() const { return !policy_.has_value(); }
  // "dense" or the policy's canonical string (what span headers carry).
  const std::string& canonical() const { return canonical_; }
  // The parsed policy. REQUIRES: !dense().
  const Policy& policy() const { return *policy_; }
  // Whether spans of this policy may be written to the cache store (CheckStorable): false for
  // dense and for query-aware policies.
  bool storable() const { return storable_; }
  int span_tokens() const { return span_tokens_; }
  // Whether this policy's caches keep the tail's queries (a compressor that reads them):
  // then model::DenseRows of its caches carry q.
  bool keeps_queries() const { return compressor_ != nullptr && compressor_->query_needs().any(); }
  // The compressor its caches run (shared, thread-safe); null when dense.
  const std::shared_ptr<SpanCompressor>& compressor() const { return compressor_; }
  // Measured heap bytes of one span of this policy (SpanMemoryBytes of a span compressed from
  // random K/V at Resolve time): the per-span cost admission plans with.
  int64_t span_bytes() const { return span_bytes_; }
  // Bytes one dense fp32 token occupies (K and V, all layers).
  int64_t dense_token_bytes() const { return dense_token_bytes_; }
  // Planned bytes of a sequence of `num_tokens` tokens under this policy: the measured
  // memory of an empty cache (its dense tail of S + 1 tokens) plus full spans at
  // span_bytes() (dense: every token dense). For admission only; the budget itself is kept
  // with measured KvCache::memory_bytes().
  int64_t PlannedBytes(int num_tokens) const;

  // A new cache for up to `capacity_tokens` positions whose committed prefix is `prefix`
  // (spans 0 .. prefix.size() - 1, e.g. loaded from the cache store; empty for a fresh
  // sequence). Errors of DenseKvCache::Create / CompressedKvCache::FromSpans; InvalidArgument
  // for a dense policy with a non-empty prefix.
  // `model` (borrowed for the call) is the model the policy was resolved for.
  absl::StatusOr<std::unique_ptr<model::KvCache>> NewCache(const model::Model& model, int capacity_tokens,
                                                           std::vector<Span> prefix) const;

 private:
  CachePolicy() = default;

  std::optional<Policy> policy_;
  std::string canonical_;
  bool storable_ = false;
  int span_tokens_ = 0;
  int64_t span_bytes_ = 0;
  int64_t dense_token_bytes_ = 0;
  int64_t empty_cache_bytes_ = 0;  // memory_bytes() of an empty CompressedKvCache of this policy
  std::shared_ptr<SpanCompressor> compressor_;  // null when dense
};

// Resolved policies by policy string, each resolved once (Resolve measures span sizes, so
// it is not free) and shared: what every service that takes policy strings keeps.
// Thread-safe.
class PolicyCache {
 public:
  PolicyCache(const model::ModelConfig& config, int span_tokens) : config_(config), span_tokens_(span_tokens) {}
  // CachePolicy::Resolve(text, ...), cached by `text`; its errors are not cached.
  absl::StatusOr<std::shared_ptr<const CachePolicy>> Get(const std::string& text);
  int span_tokens() const { return span_tokens_; }

 private:
  const model::ModelConfig config_;
  const int span_tokens_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const CachePolicy>> policies_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_CACHE_POLICY_H_
