#include "model/config.h"

#include <xxhash.h>

#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvspan::model {
namespace {

using nlohmann::json;

// The largest head_dim the kernels are tested for; guards against absurd configs.
constexpr int kMaxHeadDim = 1024;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, " ", what));
}

// Reads an integer field. Absent or null: `fallback` if given, else InvalidArgument.
absl::StatusOr<int> GetInt(const json& j, const char* field, std::optional<int> fallback,
                           int64_t min_value, int64_t max_value = std::numeric_limits<int>::max()) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback.has_value()) return *fallback;
    return FieldError(field, "is missing");
  }
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min_value || v > max_value) {
    return FieldError(field, absl::StrCat("= ", v, " is out of range [", min_value, ", ", max_value, "]"));
  }
  return static_cast<int>(v);
}

// Reads a positive number (integer or float). Absent or null: `fallback`.
absl::StatusOr<double> GetPositive(const json& j, const char* field, double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(field, "must be a number");
  const double v = it->get<double>();
  if (!(v > 0.0) || !std::isfinite(v)) return FieldError(field, absl::StrCat("= ", v, " must be > 0"));
  return v;
}

absl::StatusOr<bool> GetBool(const json& j, const char* field, bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(field, "must be true or false");
  return it->get<bool>();
}

// bos_token_id / eos_token_id: absent, null, an int or a list of ints. Appends the ids
// not already in *ids.
absl::Status AppendTokenIds(const json& j, const char* field, int vocab_size, const char* file,
                            std::vector<int32_t>* ids) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  std::vector<json> values;
  if (it->is_array()) {
    values.assign(it->begin(), it->end());
  } else {
    values.push_back(*it);
  }
  for (const json& v : values) {
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", field, " must be an int or a list of ints"));
    }
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": ", field, " ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const json& j) {
  RopeScaling rs;
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return rs;
  if (!it->is_object()) return FieldError("rope_scaling", "must be an object or null");
  const json& r = *it;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    if (r.contains(key) && r[key].is_string()) {
      type = r[key].get<std::string>();
      break;
    }
  }
  if (type == "default") return rs;
  if (type != "llama3") {
    return FieldError("rope_scaling", absl::StrCat("type '", type,
                                                   "' is not supported (supported: llama3, default)"));
  }
  rs.type = RopeScaling::Type::kLlama3;
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
    if (!r.contains(key)) return FieldError(absl::StrCat("rope_scaling.", key), "is missing");
  }
  ASSIGN_OR_RETURN(rs.factor, GetPositive(r, "factor", 1.0));
  ASSIGN_OR_RETURN(rs.low_freq_factor, GetPositive(r, "low_freq_factor", 1.0));
  ASSIGN_OR_RETURN(rs.high_freq_factor, GetPositive(r, "high_freq_factor", 4.0));
  ASSIGN_OR_RETURN(rs.original_max_position_embeddings,
                   GetInt(r, "original_max_position_embeddings", std::nullopt, 1));
  if (rs.factor < 1.0) return FieldError("rope_scaling.factor", absl::StrCat("= ", rs.factor, " must be >= 1"));
  if (!(rs.high_freq_factor > rs.low_freq_factor)) {
    return FieldError("rope_scaling.high_freq_factor", "must be > low_freq_factor");
  }
  return rs;
}

}  // namespace

absl::string_view ArchitectureName(Architecture architecture) {
  switch (architecture) {
    case Architecture::kLlama: return "LlamaForCausalLM";
    case Architecture::kMistral: return "MistralForCausalLM";
    case Architecture::kQwen2: return "Qwen2ForCausalLM";
  }
  return "?";
}

std::string FingerprintHex(absl::string_view bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return absl::StrFormat("%016x%016x", h.high64, h.low64);
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view config_json) {
  const json j = json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }
  ModelConfig c;
  std::string name;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    name = j["architectures"][0].get<std::string>();
  } else if (j.contains("model_type") && j["model_type"].is_string()) {
    const std::string type = j["model_type"].get<std::string>();
    name = type == "llama" ? "LlamaForCausalLM" : type == "mistral" ? "MistralForCausalLM"
         : type == "qwen2" ? "Qwen2ForCausalLM" : type;
  } else {
    return FieldError("architectures", "is missing (and no model_type)");
  }
  if (name == "LlamaForCausalLM") {
    c.architecture = Architecture::kLlama;
  } else if (name == "MistralForCausalLM") {
    c.architecture = Architecture::kMistral;
  } else if (name == "Qwen2ForCausalLM") {
    c.architecture = Architecture::kQwen2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: unknown architecture '", name,
        "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  c.architecture_name = name;
  const Architecture a = c.architecture;

  ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size", std::nullopt, 1));
  ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size", std::nullopt, 1, 1 << 20));
  ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, "intermediate_size", std::nullopt, 1, 1 << 22));
  ASSIGN_OR_RETURN(c.num_layers, GetInt(j, "num_hidden_layers", std::nullopt, 1, 4096));
  ASSIGN_OR_RETURN(c.num_heads, GetInt(j, "num_attention_heads", std::nullopt, 1, 4096));
  ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(j, "num_key_value_heads", c.num_heads, 1, c.num_heads));
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError("num_key_value_heads", absl::StrCat("= ", c.num_kv_heads,
                                                          " does not divide num_attention_heads = ", c.num_heads));
  }
  // Qwen2 always derives head_dim; Llama and Mistral read it when present.
  const bool reads_head_dim = a != Architecture::kQwen2 && j.contains("head_dim") && !j["head_dim"].is_null();
  if (reads_head_dim) {
    ASSIGN_OR_RETURN(c.head_dim, GetInt(j, "head_dim", std::nullopt, 2, kMaxHeadDim));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return FieldError("hidden_size", absl::StrCat("= ", c.hidden_size,
                                                    " is not divisible by num_attention_heads = ", c.num_heads));
    }
    c.head_dim = c.hidden_size / c.num_heads;
    if (c.head_dim > kMaxHeadDim) return FieldError("hidden_size / num_attention_heads", "exceeds 1024");
  }
  if (c.head_dim % 2 != 0) return FieldError("head_dim", absl::StrCat("= ", c.head_dim, " must be even (RoPE)"));

  const int default_max_positions = a == Architecture::kLlama ? 2048 : a == Architecture::kMistral ? 131072 : 32768;
  ASSIGN_OR_RETURN(c.max_position_embeddings, GetInt(j, "max_position_embeddings", default_max_positions, 1));
  ASSIGN_OR_RETURN(c.rms_norm_eps, GetPositive(j, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, GetPositive(j, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, GetBool(j, "tie_word_embeddings", false));

  if (j.contains("hidden_act") && !(j["hidden_act"].is_string() && j["hidden_act"] == "silu")) {
    return FieldError("hidden_act", "must be \"silu\"");
  }
  ASSIGN_OR_RETURN(bool attention_bias, GetBool(j, "attention_bias", false));
  ASSIGN_OR_RETURN(bool mlp_bias, GetBool(j, "mlp_bias", false));
  if (attention_bias) return FieldError("attention_bias", "= true is not supported");
  if (mlp_bias) return FieldError("mlp_bias", "= true is not supported");
  c.qkv_bias = a == Architecture::kQwen2;

  if (a == Architecture::kMistral) {
    // MistralConfig's default is 4096; an explicit null disables the window.
    if (!j.contains("sliding_window")) {
      c.sliding_window = 4096;
    } else {
      ASSIGN_OR_RETURN(c.sliding_window, GetInt(j, "sliding_window", 0, 0));
    }
  } else if (a == Architecture::kQwen2) {
    ASSIGN_OR_RETURN(bool use_sliding_window, GetBool(j, "use_sliding_window", false));
    if (use_sliding_window) return FieldError("use_sliding_window", "= true is not supported");
  }

  RETURN_IF_ERROR(AppendTokenIds(j, "bos_token_id", c.vocab_size, "config.json", &c.bos_token_ids));
  RETURN_IF_ERROR(AppendTokenIds(j, "eos_token_id", c.vocab_size, "config.json", &c.eos_token_ids));
  c.fingerprint = FingerprintHex(config_json);
  return c;
}

absl::Status ModelConfig::MergeGenerationConfig(absl::string_view generation_config_json) {
  const json j = json::parse(generation_config_json.begin(), generation_config_json.end(), nullptr,
                             /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("generation_config.json is not a JSON object");
  }
  RETURN_IF_ERROR(AppendTokenIds(j, "bos_token_id", vocab_size, "generation_config.json", &bos_token_ids));
  RETURN_IF_ERROR(AppendTokenIds(j, "eos_token_id", vocab_size, "generation_config.json", &eos_token_ids));
  return absl::OkStatus();
}

int64_t ModelConfig::kv_bytes_per_token() const {
  return int64_t{2} * num_layers * num_kv_heads * head_dim * static_cast<int64_t>(sizeof(float));
}

}  // namespace kvspan::model
