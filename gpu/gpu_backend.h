// GpuBackend: the decode worker's backend on one CUDA device (decode/backend.h), so that its
// continuous batching, admission, preemption, sessions and cache-store traffic run
// unchanged over gpu::GpuModel and gpu::GpuKvCache: weights in bf16 and every sequence's
// compressed spans and dense tail in device memory. `kvspan serve --device cuda:N` and the
// prefill/decode roles make one per worker process (one worker per GPU).
//
//   ASSIGN_OR_RETURN(auto backend, GpuBackend::Load("models/kvspan-brown", {.device = 0}));
//   ASSIGN_OR_RETURN(int64_t budget, backend->KvBudgetBytes(0.9, options.step_tokens));
//   options.kv_budget_bytes = budget;
//   decode::DecodeWorker worker(std::move(backend), tokenizer, stores, options);
//
// Built twice like the rest of gpu/: over the CUDA kernels and over the CPU emulator, where
// the decode worker's tests run it in CI.
//
// Thread-safety: as DecodeBackend (one thread steps; caches may be freed from any thread).
#ifndef KVSPAN_GPU_GPU_BACKEND_H_
#define KVSPAN_GPU_GPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "decode/backend.h"
#include "gpu/gpu_model.h"

namespace kvspan::gpu {

struct GpuBackendOptions {
  // Sample each decoding sequence's next token on the device (only the token comes back);
  // false returns the logits for the worker to sample on the host (the same stream and
  // rule: the tests compare the two).
  bool sample_on_device = true;
};

class GpuBackend final : public decode::DecodeBackend {
 public:
  // GpuModel::Load's contract and errors.
  static absl::StatusOr<std::unique_ptr<GpuBackend>> Load(const std::string& dir, const GpuModelOptions& options,
                                                          const GpuBackendOptions& backend = {});

  const model::ModelConfig& config() const override { return model_->config(); }
  // "cuda:N (name)".
  std::string name() const override;
  // Tokens are sampled on the device (GpuDeviceSample): a step returns a token per
  // decoding sequence, not its logits.
  bool samples_tokens() const override { return options_.sample_on_device; }
  // Unimplemented for a query-aware policy (GpuKvCache runs none); OK otherwise.
  absl::Status CheckPolicy(const kvcache::CachePolicy& policy) const override;
  // A GpuKvCache with the policy's compressor and S (dense for "dense"), then its prefix
  // uploaded (GpuKvCache::AdoptPrefix); their errors (GpuKvCache's Unimplemented for a
  // query-aware policy among them).
  absl::StatusOr<std::unique_ptr<decode::BackendCache>> NewCache(const kvcache::CachePolicy& policy,
                                                                 int capacity_tokens,
                                                                 std::vector<kvcache::Span> prefix) override;
  // GpuModel::Forward of the items: last-token logits, or the token sampled on the device.
  absl::Status Forward(absl::Span<decode::BackendItem> batch) override;

  // The KV budget this device can hold, as vLLM's gpu_memory_utilization: `memory_fraction`
  // of the device's total memory, less what is in use already (the weights and anything
  // else on the device) and the scratch of a step of `step_tokens` tokens.
  // InvalidArgument for a fraction outside (0, 1] or step_tokens < 1; ResourceExhausted
  // when nothing is left for KV.
  absl::StatusOr<int64_t> KvBudgetBytes(double memory_fraction, int step_tokens) const;

  GpuModel& model() { return *model_; }

 private:
  GpuBackend(std::unique_ptr<GpuModel> model, const GpuBackendOptions& options)
      : model_(std::move(model)), options_(options) {}
  std::unique_ptr<GpuModel> model_;
  const GpuBackendOptions options_;
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_GPU_BACKEND_H_
