// DecodeBackend: the forward pass and the KV caches that the decode worker's continuous
// batching runs over. The scheduler (decode_worker.h) is the same for every backend; a
// backend decides where the weights, the caches and the step run:
//   - CpuBackend (below): model::Model with CachePolicy's caches (DenseKvCache or
//     kvcache::CompressedKvCache), the embedded default;
//   - gpu::GpuBackend (gpu/gpu_backend.h): gpu::GpuModel with gpu::GpuKvCache on one CUDA
//     device, `kvspan serve --device cuda:N` (docs/architecture.md, "GPU").
//
//   CpuBackend backend(model.get());
//   ASSIGN_OR_RETURN(auto cache, backend.NewCache(*policy, 4096, std::move(prefix_spans)));
//   BackendItem item{.tokens = prompt, .cache = cache.get(), .logits = &logits};
//   RETURN_IF_ERROR(backend.Forward(absl::MakeSpan(&item, 1)));
//
// Thread-safety: NewCache and Forward are called by one thread (the worker's scheduler);
// caches may be destroyed from any thread while they are not in a Forward.
#ifndef KVSPAN_DECODE_BACKEND_H_
#define KVSPAN_DECODE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvcache/cache_policy.h"
#include "kvcache/span.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/sampler.h"

namespace kvspan::decode {

// One sequence's KV cache in a backend: what the scheduler reads of it. Made by
// DecodeBackend::NewCache, advanced only by that backend's Forward.
class BackendCache {
 public:
  virtual ~BackendCache() = default;
  // Committed tokens (positions 0 .. num_tokens() - 1).
  virtual int num_tokens() const = 0;
  // Positions the cache can hold.
  virtual int capacity_tokens() const = 0;
  // Bytes of KV memory held now, measured from the buffers (host heap on the CPU, device
  // memory on a GPU): what the worker's KV budget sums.
  virtual int64_t memory_bytes() const = 0;
  // The compressed spans covering the first spans().size() * S positions, host copies in
  // kvcache's span format (what the cache store and the transport take); empty for dense.
  virtual const std::vector<kvcache::Span>& spans() const = 0;
  // model::KvCache::ExportDenseRows / ImportDenseRows: the committed rows after the spans
  // (shipped between prefill and decode workers), with their contracts and errors.
  virtual absl::StatusOr<model::DenseRows> ExportDenseRows() const = 0;
  virtual absl::Status ImportDenseRows(const model::DenseRows& rows) = 0;
};

// The next token sampled by the backend from an item's last-token logits:
// model::SampleWithUniform(logits, *options, u) (a GPU: kernels/cuda/sampling_cuda.h, within
// its stated bound), so that only the token comes back.
struct BackendSample {
  const model::SamplingOptions* options = nullptr;  // borrowed for the call
  double u = 0;                  // the sequence's draw (Sampler::DrawUniform); unused when greedy
  int32_t* token_out = nullptr;  // out
};

// One sequence's part of a step: model::ForwardItem with the last token's logits.
struct BackendItem {
  absl::Span<const int32_t> tokens;      // >= 1 new tokens; borrowed for the call
  BackendCache* cache = nullptr;         // from this backend's NewCache; borrowed
  std::vector<float>* logits = nullptr;  // out: the last token's logits [vocab_size] (resized); null with sample
  const BackendSample* sample = nullptr;  // only for a backend that samples_tokens(); borrowed
};

class DecodeBackend {
 public:
  virtual ~DecodeBackend() = default;
  virtual const model::ModelConfig& config() const = 0;
  // Where it runs, for logs and metrics: "cpu", "cuda:0".
  virtual std::string name() const = 0;
  // Whether Forward takes BackendItem::sample (sampling where the logits are: a GPU); else
  // the caller samples the logits on the host.
  virtual bool samples_tokens() const { return false; }
  // OK when this backend can keep caches of `policy`; Unimplemented, naming what is missing,
  // otherwise (a GPU does not run query-aware compressors). Checked at admission.
  virtual absl::Status CheckPolicy(const kvcache::CachePolicy& policy) const = 0;
  // A cache of `policy` (resolved for config()) for `capacity_tokens` positions whose
  // committed prefix is `prefix` (spans 0 .. k-1, e.g. from the cache store), as
  // CachePolicy::NewCache with its errors; ResourceExhausted when the memory runs out.
  virtual absl::StatusOr<std::unique_ptr<BackendCache>> NewCache(const kvcache::CachePolicy& policy,
                                                                 int capacity_tokens,
                                                                 std::vector<kvcache::Span> prefix) = 0;
  // One step over a batch with model::Model::Forward's checks, errors and all-or-nothing
  // rule: on success every cache takes its tokens (compressing the spans they complete), on
  // error none does. REQUIRES: each item's cache came from this backend's NewCache.
  virtual absl::Status Forward(absl::Span<BackendItem> batch) = 0;
};

// The CPU backend: `model`'s Forward over CachePolicy::NewCache's caches.
class CpuBackend final : public DecodeBackend {
 public:
  // `model` is borrowed and must outlive the backend and its caches.
  explicit CpuBackend(const model::Model* model) : model_(model) {}

  const model::ModelConfig& config() const override { return model_->config(); }
  std::string name() const override { return "cpu"; }
  absl::Status CheckPolicy(const kvcache::CachePolicy&) const override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<BackendCache>> NewCache(const kvcache::CachePolicy& policy, int capacity_tokens,
                                                         std::vector<kvcache::Span> prefix) override;
  absl::Status Forward(absl::Span<BackendItem> batch) override;

 private:
  const model::Model* const model_;
};

}  // namespace kvspan::decode

#endif  // KVSPAN_DECODE_BACKEND_H_
