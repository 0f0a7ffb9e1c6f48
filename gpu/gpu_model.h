// The Llama-family forward pass on one GPU: the CPU Model's semantics (model/model.h) with
// weights uploaded once in bf16 and every activation, key and value in device memory.
// Built twice from this one source (gpu/CMakeLists.txt): against kvspan::kernels_cuda for
// the GPU, and against kvspan::kernels_emulated, where the CPU emulator runs the same
// kernels, so CI checks the whole pass against the CPU Model without a GPU.
//
// A step over a batch, as Model::Forward: the items' new tokens are stacked for the
// projections and the MLP (one matrix product per weight per step); RoPE, the keys' and
// values' append to each item's GpuKvCache, and attention for all items at once
// (CudaSpanAttention over each cache's dense keys: num_q new queries per item, causal,
// windowed under a sliding window); then the final norm and lm_head over the rows whose
// logits are wanted, copied to the host, or sampled on the device (GpuDeviceSample) so that
// only the token comes back.
//
//   ASSIGN_OR_RETURN(auto model, GpuModel::Load("models/kvspan-brown", {.device = 0}));
//   ASSIGN_OR_RETURN(auto cache, model->NewCache(1024));
//   std::vector<float> logits;
//   GpuForwardItem item{.tokens = prompt, .cache = cache.get(), .logits = &logits};
//   RETURN_IF_ERROR(model->Forward(absl::MakeSpan(&item, 1)));
//
// Caches are dense or compressed (GpuCacheOptions::compressor): a compressed cache turns
// each span of S tokens into kvcache's span format once the tokens that complete it are
// committed, exactly as CompressedKvCache does on the CPU (the same SpanCompressor, run on
// the host from the span's device K/V), uploads its entry blocks, and from then on
// attention reads those blocks in their stored layout (bf16 / fp16 / int8 / int4 / int2,
// evicted, merged or shared) and the dense tail after them. The dense rows hold only the tokens after the spans (gpu_kv_cache.h). The decode worker runs over
// it through gpu::GpuBackend (gpu_backend.h).
//
// Thread-safety: not thread-safe (one stream, shared scratch): one caller at a time.
#ifndef KVSPAN_GPU_GPU_MODEL_H_
#define KVSPAN_GPU_GPU_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/linear_cuda.h"
#include "gpu/gpu_kv_cache.h"
#include "kernels/cuda/span_attention_cuda.h"
#include "model/config.h"
#include "model/model.h"
#include "model/sampler.h"

namespace kvspan::gpu {

enum class GpuGemm {
  kAuto,      // cuBLASLt where the build has it, else the plain kernel
  kPlain,     // kernels/cuda/linear_cuda.h's plain kernel (exact products)
  kCublasLt,  // cuBLASLt (activations rounded to bf16)
};

struct GpuModelOptions {
  int device = 0;  // cuda:N; the emulated build has one device, 0
  GpuGemm gemm = GpuGemm::kAuto;
};

// A token sampled on the device from an item's last-token logits (kernels/cuda/
// sampling_cuda.h): model::SampleWithUniform(logits, options, u) within that header's stated
// bound, and only the token (4 bytes) is copied back to the host.
struct GpuDeviceSample {
  model::SamplingOptions options;  // the seed is unused: u is the draw
  double u = 0;                    // the sequence's next draw in [0, 1) (Sampler::DrawUniform); unused when greedy
  int32_t* token_out = nullptr;    // out: the token id; borrowed for the call
};

struct GpuForwardItem {
  absl::Span<const int32_t> tokens;  // >= 1 new tokens; borrowed for the call
  GpuKvCache* cache = nullptr;       // borrowed; its num_tokens() is the position of tokens[0]
  model::LogitsMode logits_mode = model::LogitsMode::kLastToken;
  std::vector<float>* logits = nullptr;  // out: [1 or tokens.size(), vocab_size] (resized); may be null with sample
  const GpuDeviceSample* sample = nullptr;  // optional, borrowed for the call; REQUIRES kLastToken
};

class GpuModel {
 public:
  // Loads `dir` as Model::Load does, its matrices in bf16 (exact for bf16 checkpoints; f32
  // and f16 ones round to nearest even, and the fingerprint says so), uploads them to
  // `options.device` and frees the host copy. Model::Load's errors; Unavailable without
  // the device; ResourceExhausted when the weights do not fit; Unimplemented for
  // GpuGemm::kCublasLt in a build without cuBLASLt.
  static absl::StatusOr<std::unique_ptr<GpuModel>> Load(const std::string& dir, const GpuModelOptions& options);
  // A model of `config`'s shape whose weights are random, made on the device (no checkpoint
  // and no host copy; for benchmarks at full size, bench/gpu_model_bench.cc): matrix t of
  // the model (embedding, then per layer qkv, o, gate_up, down, then lm_head unless tied) is
  // kernels::RandomUniformBf16Cuda with bound 1 / sqrt(cols) and seed
  // kernels::RandomFillSeed(seed, t); norms are 1 and q/k/v biases (qkv_bias) 0. The same seed and shape give the
  // same weights on any device and in the emulator. The config's fingerprint becomes
  // "random:<seed>:<shape>[:<config's own fingerprint>]", so such a model's spans never pass
  // for a checkpoint's. InvalidArgument for a shape out of range (a dimension < 1, heads not
  // a multiple of KV heads, an odd or too large head_dim, no positions); Load's device errors.
  static absl::StatusOr<std::unique_ptr<GpuModel>> CreateRandom(const model::ModelConfig& config, uint64_t seed,
                                                                 const GpuModelOptions& options);

  const model::ModelConfig& config() const { return config_; }
  // The GEMM path in use ("cublaslt" or "plain").
  std::string gemm_name() const { return lt_ != nullptr ? "cublaslt" : "plain"; }
  int64_t weight_memory_bytes() const { return weight_bytes_; }
  int device() const { return device_; }
  // Device bytes of the step scratch Forward grows to for `tokens` new tokens with
  // `logits_rows` rows of logits (the attention's split scratch not counted): what a KV
  // budget leaves aside for the steps.
  int64_t StepScratchBytes(int tokens, int logits_rows) const;

  // An empty cache for `capacity_tokens` tokens. InvalidArgument unless 1 <= capacity_tokens
  // <= max_position_embeddings and span_tokens is in range; Unimplemented for a query-aware
  // compressor; ResourceExhausted when the device memory runs out.
  absl::StatusOr<std::unique_ptr<GpuKvCache>> NewCache(int capacity_tokens, const GpuCacheOptions& options = {}) const;

  // One step over a batch, with Model::Forward's checks and errors (InvalidArgument for an
  // empty batch or item, a null cache, neither logits nor sample, a cache twice, a token
  // outside the vocabulary or a position past max_position_embeddings, a sample with
  // kAllTokens, a null token_out, options ValidateSamplingOptions rejects or, unless greedy,
  // u outside [0, 1); ResourceExhausted for a cache without room; a compressor's error as
  // it returned it). On success every cache takes its tokens, compressing the spans they
  // complete, and every logits and token_out is written; on error no cache changes (the
  // checks come first, spans are compressed and uploaded into staged state before any cache
  // changes). Only the rows of items with logits are copied to the host.
  absl::Status Forward(absl::Span<GpuForwardItem> batch);

 private:
  struct Matrix {
    kernels::DeviceBuffer data;  // [rows, cols] bf16
    int rows = 0;
    int cols = 0;
  };
  struct Layer {
    kernels::DeviceBuffer attn_norm, mlp_norm, qkv_bias;  // fp32
    bool has_qkv_bias = false;
    Matrix qkv, o, gate_up, down;
  };

  GpuModel() = default;
  // An empty model on options.device with its GEMM path chosen (Load's and CreateRandom's
  // first step).
  static absl::StatusOr<std::unique_ptr<GpuModel>> OnDevice(const GpuModelOptions& options);
  absl::Status Linear(const kernels::LinearCudaParams& p);
  static constexpr int kScratchBuffers = 9;
  // Elements of each scratch buffer for a step (scratch_'s order).
  std::array<int64_t, kScratchBuffers> ScratchFloats(int total_tokens, int logits_rows) const;
  absl::Status Reserve(int total_tokens, int logits_rows);

  model::ModelConfig config_;
  std::unique_ptr<kernels::CublasLtLinear> lt_;  // null: the plain kernel
  Matrix embed_, lm_head_;                        // lm_head_ empty when tied
  std::vector<Layer> layers_;
  kernels::DeviceBuffer final_norm_, inv_freq_;
  int64_t weight_bytes_ = 0;
  kernels::CudaSpanAttention attention_;
  int device_ = 0;
  // Step scratch, grown as batches need (ScratchFloats), and the sampled tokens.
  kernels::DeviceBuffer x_, xn_, qkv_, attn_, gate_up_, act_, ids_, positions_, logits_, tokens_;
  const std::array<kernels::DeviceBuffer*, kScratchBuffers> scratch_{&x_,       &xn_,  &qkv_,       &attn_,  &gate_up_,
                                                                     &act_,     &ids_, &positions_, &logits_};
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_GPU_MODEL_H_
