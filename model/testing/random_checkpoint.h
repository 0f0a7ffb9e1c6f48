// Writes a random-weight Hugging Face checkpoint directory (config.json,
// generation_config.json, model.safetensors or N shards with
// model.safetensors.index.json) for any supported architecture and config variant.
// Used by tests (tiny models) and tools/make_random_model (full-size shapes).
// The weights are a deterministic function of the options (seed included).
#ifndef KVSPAN_MODEL_TESTING_RANDOM_CHECKPOINT_H_
#define KVSPAN_MODEL_TESTING_RANDOM_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/config.h"
#include "model/model.h"
#include "model/safetensors.h"

namespace kvspan::model::testing {

struct RandomCheckpointOptions {
  Architecture architecture = Architecture::kLlama;
  int vocab_size = 97;
  int hidden_size = 64;
  int intermediate_size = 160;
  int num_layers = 2;
  int num_heads = 4;
  int num_kv_heads = 2;
  int head_dim = 0;  // 0: hidden_size / num_heads (written to config.json when nonzero; not for Qwen2)
  int max_position_embeddings = 1024;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;          // type kLlama3 writes a "llama3" rope_scaling block
  bool tie_word_embeddings = false;  // no lm_head.weight in the files
  int sliding_window = 0;            // Mistral only; 0 writes null
  DType dtype = DType::kF32;         // F32, F16 or BF16
  int num_shards = 1;                // > 1: model-0000i-of-0000N.safetensors + index
  uint64_t seed = 1;
  // Matrices (2-D tensors) on the int4 grid: every value step · code, code in [-7, 7], step a
  // power of two per tensor, code 7 at every 32nd column, so that kernels::QuantizeRowsInt4
  // (any group size that is a multiple of 32) holds them exactly.
  bool int4_grid = false;
  int bos_token_id = 1;
  int eos_token_id = 2;               // config.json
  int extra_eos_token_id = 3;         // generation_config.json adds it (-1: none)
};

// Writes the checkpoint into `dir` (created if missing). InvalidArgument for options out
// of range; Internal for I/O errors.
absl::Status WriteRandomCheckpoint(const std::string& dir, const RandomCheckpointOptions& options);

// WriteRandomCheckpoint(dir, options), then Model::Load(dir) with `num_threads` threads.
absl::StatusOr<std::unique_ptr<Model>> WriteAndLoadRandomModel(const std::string& dir,
                                                               const RandomCheckpointOptions& options,
                                                               int num_threads);

// The config.json text WriteRandomCheckpoint writes (for tests that edit it).
std::string RandomCheckpointConfigJson(const RandomCheckpointOptions& options);

// Named full-size shapes for tools: "llama-3.2-1b" (hidden 2048, intermediate 8192,
// 16 layers, 32 heads, 8 kv heads, head_dim 64, vocab 128256, rope_theta 500000, llama3
// scaling factor 32 / low 1 / high 4 / original 8192, tied embeddings), "tiny-llama",
// "tiny-mistral", "tiny-qwen2". NotFound for another name.
absl::StatusOr<RandomCheckpointOptions> NamedShape(absl::string_view name);

}  // namespace kvspan::model::testing

#endif  // KVSPAN_MODEL_TESTING_RANDOM_CHECKPOINT_H_
