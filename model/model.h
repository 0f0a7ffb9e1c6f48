// The Llama-family decoder (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) on
// CPU: loads a Hugging Face checkpoint directory and runs batched forward steps (chunked
// prefill and decode) over KV caches, activations in fp32 and weights in the checkpoint's
// dtype (bf16 / fp16 / f32, never expanded) or int8 (ModelOptions::weights), with the semantics of transformers'
// implementation of these classes (rotate-half RoPE on q_proj/k_proj outputs, GQA,
// RMSNorm, SwiGLU, optional llama3 RoPE scaling, Qwen2 q/k/v biases, tied embeddings,
// Mistral's sliding window).
//
//   ASSIGN_OR_RETURN(auto model, Model::Load("models/kvspan-brown", {.num_threads = 2}));
//   ASSIGN_OR_RETURN(auto cache, model->NewDenseCache(1024));
//   std::vector<float> logits;
//   ForwardItem item{.tokens = prompt, .cache = cache.get(), .logits = &logits};
//   RETURN_IF_ERROR(model->Forward(absl::MakeSpan(&item, 1)));  // logits: [1, vocab]
//
// Thread-safety: immutable after Load; Forward is thread-safe for calls on distinct caches.
#ifndef KVSPAN_MODEL_MODEL_H_
#define KVSPAN_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/flags.h"
#include "common/thread_pool.h"
#include "kernels/cpu_isa.h"
#include "model/config.h"
#include "model/internal/weights.h"
#include "model/kv_cache.h"

namespace kvspan::model {

// The in-memory format of the weight matrices (norms and biases are always fp32).
enum class WeightsMode {
  kAuto,  // the checkpoint's dtype (that of model.embed_tokens.weight): f32, bf16 or f16
  kF32,   // fp32 (exact for every float checkpoint; 2x the bytes of a bf16 one)
  kBF16,  // bf16 (exact for bf16 checkpoints; f32 and f16 ones round to nearest even)
  kInt8,  // int8 per output channel with fp32 row scales (kernels/weight_matrix.h)
  kInt4,  // int4 group-wise with fp16 group scales (kernels/weight_matrix.h)
};

// The in-memory format of the weight matrices, as --weights and --weights-group give it.
struct WeightsChoice {
  WeightsMode mode = WeightsMode::kAuto;
  int group_size = 32;  // kInt4 only: weights per scale, a positive multiple of 32
};

// "auto", "f32", "bf16", "int8", "int4".
absl::string_view WeightsModeName(WeightsMode mode);
// The inverse of WeightsModeName. InvalidArgument naming the choices for anything else.
absl::StatusOr<WeightsMode> ParseWeightsMode(absl::string_view name);
// Registers --weights (auto|f32|bf16|int8|int4) and --weights-group (int4's group size)
// writing into *target (borrowed: must outlive Parse): the one definition every command
// that loads a model (or checks its workers' fingerprint) uses.
void AddWeightsFlag(FlagSet& flags, WeightsChoice* target);

struct ModelOptions {
  // Threads for matrix products (OpenBLAS, process-wide; kvspan's own bf16/int8/int4
  // kernels) and attention (the model's own pool). 0 = hardware concurrency.
  int num_threads = 0;
  // Format of the weight matrices in memory.
  WeightsChoice weights = {};
  // How long the model's pool threads poll for work before they sleep (ThreadPool); >= 0.
  int pool_spin_micros = ThreadPool::kDefaultSpinMicros;
  // The instruction set of kvspan's own matrix kernels for this model (kernels/cpu_isa.h):
  // unset = kernels::SelectedCpuIsa() (KVSPAN_CPU_ISA, else auto). Set, the CPU must
  // support it (Load's InvalidArgument otherwise): a process can hold the exact kernels
  // and kAvx512Bf16Dot side by side (bench/weights_quality_bench).
  std::optional<kernels::CpuIsa> cpu_isa = std::nullopt;
};

enum class LogitsMode {
  kLastToken,  // logits of the item's last token only: [1, vocab_size]
  kAllTokens,  // logits of every token of the item: [tokens.size(), vocab_size]
};

struct ForwardItem {
  absl::Span<const int32_t> tokens;  // >= 1 new tokens of one sequence; borrowed for the call
  KvCache* cache = nullptr;          // borrowed for the call; its num_tokens() is the position of tokens[0]
  LogitsMode logits_mode = LogitsMode::kLastToken;
  std::vector<float>* logits = nullptr;  // out: [1 or tokens.size(), vocab_size] row-major (resized)
  // RoPE positions of the tokens: empty = cache->num_tokens() + j (the usual case); else one
  // per token, each in [0, max_position_embeddings). Explicit positions serve schemes whose
  // tokens do not all advance the position (sentinel-token compression: kvcache/sentinel.h).
  absl::Span<const int32_t> positions = {};
};

// The rotate-half RoPE frequencies of `config` ([head_dim / 2], fp32 as transformers computes
// them, llama3 rope_scaling applied): what the forward pass rotates q and k with.
std::vector<float> RopeInvFreqFor(const ModelConfig& config);

// Forward's checks of one item's tokens (the item's index `item` names it in messages):
// InvalidArgument for no tokens, a token id outside [0, vocab_size), explicit positions of
// the wrong count or outside [0, max_position_embeddings), or (without explicit positions)
// positions first_position .. + tokens.size() - 1 past max_position_embeddings. Shared by
// every backend's forward pass (the CPU Model, gpu::GpuModel).
absl::Status ValidateForwardTokens(const ModelConfig& config, size_t item, absl::Span<const int32_t> tokens,
                                   absl::Span<const int32_t> positions, int64_t first_position);

class Model {
 public:
  // Loads `dir`: config.json, generation_config.json (optional), model.safetensors or the
  // shards of model.safetensors.index.json (f32, f16 or bf16), copied (or converted, as
  // options.weights asks) into memory owned by the Model (the files are unmapped before
  // Load returns; each part's pages are released as soon as it is copied, so the load's
  // peak resident set stays near the copy's size): with kAuto, weight memory equals the
  // checkpoint's size.
  // Errors: NotFound for a missing config.json or weights file or a missing tensor
  // (naming it); DataLoss for a truncated or malformed safetensors file;
  // InvalidArgument for a config problem (see ModelConfig::FromJson), a tensor of the
  // wrong shape or dtype, or options out of range.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir, const ModelOptions& options);
  // The config Load would give `dir`'s model with `weights` (fingerprint included: the
  // checkpoint's headers are read, its tensors are not), for processes that validate
  // requests for a model without running it (`kvspan frontend`). Load's errors for those
  // files, and InvalidArgument for a bad group size.
  // The fingerprint names the checkpoint (config.json and the tensors' headers) and, when
  // the weights are held in a format that changes their values (int8, int4, or bf16 from
  // an f32 / f16 checkpoint), that format too: KV computed with quantized weights is not
  // the checkpoint's KV, so the cache store and the disaggregated roles keep them apart.
  static absl::StatusOr<ModelConfig> LoadConfig(const std::string& dir, const WeightsChoice& weights = {});

  const ModelConfig& config() const { return config_; }

  // A fresh fp32 cache for this model's geometry. InvalidArgument unless
  // 1 <= capacity_tokens <= max_position_embeddings; ResourceExhausted if memory runs out.
  absl::StatusOr<std::unique_ptr<DenseKvCache>> NewDenseCache(int capacity_tokens) const;

  // One step over a batch: the tokens of all items are stacked into one matrix for the
  // projections and the MLP (one matrix product per weight per step); attention runs per
  // item through its cache, and on success every cache takes its item's tokens in a
  // two-phase commit (PrepareCommit on every cache, then Commit on every cache).
  // Errors: InvalidArgument for an empty batch or item, a null cache or logits pointer,
  // the same cache twice, a token id outside [0, vocab_size), positions past
  // max_position_embeddings, or explicit positions of the wrong count or out of range;
  // ResourceExhausted from a cache that cannot take the tokens; a cache's AppendAndAttend
  // or PrepareCommit error as the cache returned it (e.g. a span compressor's
  // InvalidArgument); Internal only for a cache whose Commit fails after its PrepareCommit
  // succeeded (a broken KvCache contract).
  // On error no cache changes (validation comes first; a cache error mid-step or in
  // PrepareCommit rolls every cache of the batch back with Truncate).
  absl::Status Forward(absl::Span<ForwardItem> batch) const;

  // Bytes of weights read per forward step in their in-memory format (every matrix, norm
  // and bias; the embedding only when it is also the output matrix), for bandwidth numbers.
  int64_t weight_bytes() const;
  // Bytes of all weights held in memory (the embedding included).
  int64_t weight_memory_bytes() const;
  // The format the weight matrices are held in.
  kernels::WeightFormat weight_format() const { return weights_.embed.format; }
  // "bf16", "int8", "int4-g32": the format with int4's group size.
  std::string weight_format_label() const;
  // The instruction set its matrix kernels run with (ModelOptions::cpu_isa).
  kernels::CpuIsa cpu_isa() const { return isa_; }

 private:
  // REQUIRES: weights match config (LoadWeights checked them); options.num_threads >= 0.
  Model(ModelConfig config, internal::Weights weights, const ModelOptions& options);

  const ModelConfig config_;
  const internal::Weights weights_;
  const kernels::CpuIsa isa_;
  std::vector<float> inv_freq_;  // [head_dim / 2] RoPE frequencies
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_MODEL_H_
