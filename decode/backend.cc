#include "decode/backend.h"

#include <utility>

#include "common/status_macros.h"
#include "kvcache/compressed_kv_cache.h"

namespace kvspan::decode {
namespace {

// A CachePolicy cache: DenseKvCache (no spans) or CompressedKvCache.
class CpuCache final : public BackendCache {
 public:
  CpuCache(std::unique_ptr<model::KvCache> cache, const kvcache::CompressedKvCache* compressed, int capacity_tokens)
      : cache_(std::move(cache)), compressed_(compressed), capacity_tokens_(capacity_tokens) {}

  int num_tokens() const override { return cache_->num_tokens(); }
  int capacity_tokens() const override { return capacity_tokens_; }
  int64_t memory_bytes() const override { return cache_->memory_bytes(); }
  const std::vector<kvcache::Span>& spans() const override {
    static const std::vector<kvcache::Span>& kNone = *new std::vector<kvcache::Span>();
    return compressed_ != nullptr ? compressed_->spans() : kNone;
  }
  absl::StatusOr<model::DenseRows> ExportDenseRows() const override { return cache_->ExportDenseRows(); }
  absl::Status ImportDenseRows(const model::DenseRows& rows) override { return cache_->ImportDenseRows(rows); }

  model::KvCache* kv() { return cache_.get(); }

 private:
  const std::unique_ptr<model::KvCache> cache_;
  const kvcache::CompressedKvCache* const compressed_;  // cache_ when it is compressed
  const int capacity_tokens_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BackendCache>> CpuBackend::NewCache(const kvcache::CachePolicy& policy,
                                                                   int capacity_tokens,
                                                                   std::vector<kvcache::Span> prefix) {
  ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> cache, policy.NewCache(*model_, capacity_tokens, std::move(prefix)));
  const auto* compressed = policy.dense() ? nullptr : static_cast<const kvcache::CompressedKvCache*>(cache.get());
  return std::make_unique<CpuCache>(std::move(cache), compressed, capacity_tokens);
}

absl::Status CpuBackend::Forward(absl::Span<BackendItem> batch) {
  std::vector<model::ForwardItem> items(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    items[i].tokens = batch[i].tokens;
    items[i].cache = batch[i].cache == nullptr ? nullptr : static_cast<CpuCache*>(batch[i].cache)->kv();
    items[i].logits_mode = model::LogitsMode::kLastToken;
    items[i].logits = batch[i].logits;
  }
  return model_->Forward(absl::MakeSpan(items));
}

}  // namespace kvspan::decode
