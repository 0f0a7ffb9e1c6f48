// The model configuration read from a Hugging Face config.json (and
// generation_config.json), validated, for the Llama family: LlamaForCausalLM (Llama 2, 3,
// 3.1, 3.2), MistralForCausalLM and Qwen2ForCausalLM, with the defaults and derived
// values of transformers' LlamaConfig / MistralConfig / Qwen2Config.
// Plain value type; thread-compatible.
#ifndef KVSPAN_MODEL_CONFIG_H_
#define KVSPAN_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvspan::model {

enum class Architecture { kLlama, kMistral, kQwen2 };

struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  // "llama3" parameters (transformers' names); unused for kNone.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // e.g. "LlamaForCausalLM"

  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;    // num_hidden_layers
  int num_heads = 0;     // num_attention_heads
  int num_kv_heads = 0;  // num_key_value_heads (default: num_heads)
  int head_dim = 0;      // config head_dim (Llama, Mistral) or hidden_size / num_heads
  int max_position_embeddings = 0;

  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;

  bool tie_word_embeddings = false;  // lm_head reads model.embed_tokens.weight
  bool qkv_bias = false;             // q/k/v projections have biases (Qwen2)
  int sliding_window = 0;            // keys a query sees, itself included; 0 = all (Mistral)

  // From config.json, extended by generation_config.json (MergeGenerationConfig).
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;

  // Stable hex hash (XXH3-128) of config.json; Model::Load extends it with the weights'
  // index and header bytes. For cache keys: equal fingerprints, same model.
  std::string fingerprint;

  // Parses and validates config.json. InvalidArgument naming the field for: invalid JSON,
  // an unknown architecture, a missing required field, a value of the wrong type or out of
  // range, inconsistent values (num_heads % num_kv_heads, hidden_size / num_heads where
  // transformers derives head_dim, an odd head_dim), a rope_scaling type other than
  // "llama3"/"default", and features this runtime does not implement (attention_bias or
  // mlp_bias on Llama, hidden_act other than silu, Qwen2 use_sliding_window).
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view config_json);

  // Adds generation_config.json's bos_token_id / eos_token_id (int or list) to the ids
  // from config.json (a union, config.json's first). InvalidArgument for invalid JSON or
  // an id outside [0, vocab_size).
  absl::Status MergeGenerationConfig(absl::string_view generation_config_json);

  // Bytes of one token's K and V over all layers in fp32 (for capacity planning).
  int64_t kv_bytes_per_token() const;
};

// "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM".
absl::string_view ArchitectureName(Architecture architecture);

// Stable lowercase hex XXH3-128 of `bytes`.
std::string FingerprintHex(absl::string_view bytes);

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_CONFIG_H_
