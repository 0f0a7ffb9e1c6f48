#include "gpu/gpu_backend.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"

namespace kvspan::gpu {
namespace {

// A GpuKvCache as the decode worker sees it.
class GpuCache final : public decode::BackendCache {
 public:
  explicit GpuCache(std::unique_ptr<GpuKvCache> cache) : cache_(std::move(cache)) {}
  int num_tokens() const override { return cache_->num_tokens(); }
  int capacity_tokens() const override { return cache_->capacity(); }
  int64_t memory_bytes() const override { return cache_->memory_bytes(); }
  const std::vector<kvcache::Span>& spans() const override { return cache_->spans(); }
  absl::StatusOr<model::DenseRows> ExportDenseRows() const override { return cache_->ExportDenseRows(); }
  absl::Status ImportDenseRows(const model::DenseRows& rows) override { return cache_->ImportDenseRows(rows); }
  GpuKvCache* gpu() { return cache_.get(); }

 private:
  const std::unique_ptr<GpuKvCache> cache_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuBackend>> GpuBackend::Load(const std::string& dir, const GpuModelOptions& options,
                                                             const GpuBackendOptions& backend) {
  ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> model, GpuModel::Load(dir, options));
  return std::unique_ptr<GpuBackend>(new GpuBackend(std::move(model), backend));
}

std::string GpuBackend::name() const {
  return absl::StrCat("cuda:", model_->device(), " (", kernels::CudaDeviceName(model_->device()), ")");
}

absl::Status GpuBackend::CheckPolicy(const kvcache::CachePolicy& policy) const {
  if (policy.keeps_queries()) {
    return absl::UnimplementedError(absl::StrCat("policy ", policy.canonical(),
                                                 " reads queries, and query-aware compressors do not run on the "
                                                 "GPU yet; use a query-agnostic policy or a CPU worker"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<decode::BackendCache>> GpuBackend::NewCache(const kvcache::CachePolicy& policy,
                                                                           int capacity_tokens,
                                                                           std::vector<kvcache::Span> prefix) {
  RETURN_IF_ERROR(kernels::CudaSetDevice(model_->device()));  // the calling thread's device
  GpuCacheOptions options;
  if (!policy.dense()) {
    options.compressor = policy.compressor();
    options.span_tokens = policy.span_tokens();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<GpuKvCache> cache, model_->NewCache(capacity_tokens, options));
  RETURN_IF_ERROR(cache->AdoptPrefix(std::move(prefix)));
  return std::make_unique<GpuCache>(std::move(cache));
}

absl::Status GpuBackend::Forward(absl::Span<decode::BackendItem> batch) {
  RETURN_IF_ERROR(kernels::CudaSetDevice(model_->device()));
  std::vector<GpuForwardItem> items(batch.size());
  std::vector<GpuDeviceSample> samples(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    items[i].tokens = batch[i].tokens;
    items[i].cache = batch[i].cache == nullptr ? nullptr : static_cast<GpuCache*>(batch[i].cache)->gpu();
    items[i].logits_mode = model::LogitsMode::kLastToken;
    items[i].logits = batch[i].logits;
    if (const decode::BackendSample* sample = batch[i].sample; sample != nullptr) {
      if (sample->options == nullptr) return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, "'s sample has no options"));
      samples[i] = {.options = *sample->options, .u = sample->u, .token_out = sample->token_out};
      items[i].sample = &samples[i];
    }
  }
  return model_->Forward(absl::MakeSpan(items));
}

absl::StatusOr<int64_t> GpuBackend::KvBudgetBytes(double memory_fraction, int step_tokens) const {
  if (!(memory_fraction > 0 && memory_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("the GPU memory fraction must be in (0, 1], got ", memory_fraction));
  }
  if (step_tokens < 1) return absl::InvalidArgumentError(absl::StrCat("step_tokens must be >= 1, got ", step_tokens));
  RETURN_IF_ERROR(kernels::CudaSetDevice(model_->device()));
  ASSIGN_OR_RETURN(kernels::CudaMemoryInfo info, kernels::CudaMemGetInfo());
  const int64_t in_use = info.total_bytes - info.free_bytes;
  // A step feeds at most step_tokens tokens, so at most that many rows of logits.
  const int64_t scratch = model_->StepScratchBytes(step_tokens, step_tokens);
  const int64_t budget = static_cast<int64_t>(memory_fraction * static_cast<double>(info.total_bytes)) - in_use - scratch;
  if (budget <= 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no device memory is left for the KV cache: ", memory_fraction, " of ", info.total_bytes, " bytes, less ",
        in_use, " in use (the weights are ", model_->weight_memory_bytes(), ") and ", scratch,
        " of step scratch at ", step_tokens, " tokens"));
  }
  return budget;
}

}  // namespace kvspan::gpu
