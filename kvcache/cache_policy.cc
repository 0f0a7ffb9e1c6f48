#include "kvcache/cache_policy.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvspan::kvcache {
namespace {

// One span compressed from seeded random K/V (and queries, for policies that read them):
// its measured memory is the policy's per-span cost. Deterministic, so every replica plans
// with the same number.
absl::StatusOr<int64_t> MeasureSpanBytes(const model::ModelConfig& config, int span_tokens,
                                         SpanCompressor& compressor) {
  const QueryNeeds needs = compressor.query_needs();
  const int tokens = span_tokens + needs.observation_tokens;
  const int64_t row = int64_t{config.num_kv_heads} * config.head_dim;
  const int64_t q_row = int64_t{config.num_heads} * config.head_dim;
  std::vector<float> k(config.num_layers * tokens * row), v(k.size()), q(config.num_layers * tokens * q_row);
  std::mt19937 rng(12345);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  for (float& x : q) x = normal(rng);
  const std::vector<float> inv_freq = model::RopeInvFreqFor(config);
  DenseQueryView queries{.q = q.data(), .layer_stride = tokens * q_row, .token_stride = q_row,
                         .num_heads = config.num_heads, .num_tokens = tokens, .rope_inv_freq = inv_freq};
  DenseSpanView view;
  view.geometry = {config.num_layers, config.num_kv_heads, config.head_dim, span_tokens};
  view.kv = {.keys = k.data(), .values = v.data(), .layer_stride = tokens * row,
             .head_stride = config.head_dim, .token_stride = row};
  view.queries = needs.any() ? &queries : nullptr;
  ASSIGN_OR_RETURN(Span span, compressor.Compress(view));
  // What a CompressedKvCache holds per span: the span, its kernel views, their slots.
  return SpanMemoryBytes(span) + SpanKernelViews(span).memory_bytes() +
         static_cast<int64_t>(sizeof(Span) + sizeof(SpanKernelViews));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CachePolicy>> CachePolicy::Resolve(absl::string_view text,
                                                                        const model::ModelConfig& config,
                                                                        int span_tokens) {
  if (span_tokens < 1 || span_tokens > kMaxSpanTokens) {
    return absl::InvalidArgumentError(absl::StrCat("span tokens ", span_tokens, " outside [1, ", kMaxSpanTokens, "]"));
  }
  std::shared_ptr<CachePolicy> p(new CachePolicy());
  p->span_tokens_ = span_tokens;
  p->dense_token_bytes_ = int64_t{2} * config.num_layers * config.num_kv_heads * config.head_dim * sizeof(float);
  if (text == kDensePolicy) {
    p->canonical_ = std::string(kDensePolicy);
    p->span_bytes_ = p->dense_token_bytes_ * span_tokens;
    return p;
  }
  ASSIGN_OR_RETURN(Policy policy, ParsePolicy(text));
  p->canonical_ = policy.ToString();
  p->storable_ = CheckStorable(p->canonical_).ok();
  p->compressor_ = std::make_shared<PolicySpanCompressor>(
      PolicySpanCompressor::Options{.policy = policy, .model_fingerprint = config.fingerprint});
  p->policy_ = std::move(policy);
  absl::StatusOr<int64_t> bytes = MeasureSpanBytes(config, span_tokens, *p->compressor_);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", text, "' cannot compress a span of this model: ",
                                                   bytes.status().message()));
  }
  p->span_bytes_ = *bytes;
  // An empty cache already holds its dense tail (S + 1 tokens, and their queries when the
  // policy reads them): measured from a real one.
  ASSIGN_OR_RETURN(auto empty, CompressedKvCache::Create(
                                   CompressedKvCache::OptionsFor(config, span_tokens, config.max_position_embeddings),
                                   p->compressor_));
  p->empty_cache_bytes_ = empty->memory_bytes();
  return p;
}

int64_t CachePolicy::PlannedBytes(int num_tokens) const {
  if (dense()) return dense_token_bytes_ * num_tokens;
  return empty_cache_bytes_ + static_cast<int64_t>(num_tokens / span_tokens_) * span_bytes_;
}

absl::StatusOr<std::unique_ptr<model::KvCache>> CachePolicy::NewCache(const model::Model& model,
                                                                      int capacity_tokens,
                                                                      std::vector<Span> prefix) const {
  if (dense()) {
    if (!prefix.empty()) return absl::InvalidArgumentError("a dense cache has no span prefix");
    ASSIGN_OR_RETURN(auto cache, model.NewDenseCache(capacity_tokens));
    return std::unique_ptr<model::KvCache>(std::move(cache));
  }
  ASSIGN_OR_RETURN(auto cache, CompressedKvCache::FromSpans(
                                   CompressedKvCache::OptionsFor(model.config(), span_tokens_, capacity_tokens),
                                   compressor_, std::move(prefix)));
  return std::unique_ptr<model::KvCache>(std::move(cache));
}

absl::StatusOr<std::shared_ptr<const CachePolicy>> PolicyCache::Get(const std::string& text) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = policies_.find(text);
    if (it != policies_.end()) return it->second;
  }
  absl::StatusOr<std::shared_ptr<const CachePolicy>> policy = CachePolicy::Resolve(text, config_, span_tokens_);
  if (!policy.ok()) return policy.status();
  std::lock_guard<std::mutex> lock(mu_);
  return policies_.emplace(text, *std::move(policy)).first->second;
}

}  // namespace kvspan::kvcache
