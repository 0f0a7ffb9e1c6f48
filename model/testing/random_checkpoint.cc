#include "model/testing/random_checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "model/testing/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace kvspan::model::testing {
namespace {

using nlohmann::ordered_json;

// splitmix64: a small, fast, seedable generator; the stream of a tensor depends only on
// the seed and the tensor's name, so shards and orders do not change the values.
struct SplitMix64 {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float Uniform() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; }  // [-1, 1)
};

uint64_t NameHash(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

int HeadDim(const RandomCheckpointOptions& o) { return o.head_dim > 0 ? o.head_dim : o.hidden_size / o.num_heads; }

bool EndsWith(const std::string& s, absl::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix.data()) == 0;
}

// Values: norms around 1, biases visible, matrices with unit-variance outputs; with
// int4_grid, each matrix value snapped to step · code (code in [-7, 7], step a power of two)
// with code 7 at every 32nd column.
void FillTensor(uint64_t seed, bool int4_grid, const TensorSpec& spec, absl::Span<float> out) {
  SplitMix64 rng{seed ^ NameHash(spec.name)};
  float center = 0.0f, scale = 1.0f;
  if (EndsWith(spec.name, "norm.weight")) {
    center = 1.0f;
    scale = 0.2f;
  } else if (EndsWith(spec.name, ".bias")) {
    scale = 0.5f;
  } else if (spec.name == "model.embed_tokens.weight") {
    scale = 1.0f;
  } else {
    scale = std::sqrt(3.0f / static_cast<float>(spec.shape[1]));  // std 1/sqrt(in_features)
  }
  for (float& v : out) v = center + scale * rng.Uniform();
  if (int4_grid && spec.shape.size() == 2) {
    const float step = std::exp2(std::round(std::log2(scale / 7.0f)));
    const int64_t cols = spec.shape[1];
    for (size_t e = 0; e < out.size(); ++e) {
      out[e] = static_cast<int64_t>(e) % cols % 32 == 0 ? 7.0f * step
                                                       : step * std::clamp(std::round(out[e] / step), -7.0f, 7.0f);
    }
  }
}

std::vector<TensorSpec> Specs(const RandomCheckpointOptions& o) {
  const int64_t h = o.hidden_size, hd = HeadDim(o), q = o.num_heads * hd, kv = o.num_kv_heads * hd,
                inter = o.intermediate_size;
  std::vector<TensorSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape) { specs.push_back({std::move(name), o.dtype, std::move(shape)}); };
  add("model.embed_tokens.weight", {o.vocab_size, h});
  for (int l = 0; l < o.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {h});
    add(p + "self_attn.q_proj.weight", {q, h});
    add(p + "self_attn.k_proj.weight", {kv, h});
    add(p + "self_attn.v_proj.weight", {kv, h});
    if (o.architecture == Architecture::kQwen2) {
      add(p + "self_attn.q_proj.bias", {q});
      add(p + "self_attn.k_proj.bias", {kv});
      add(p + "self_attn.v_proj.bias", {kv});
    }
    add(p + "self_attn.o_proj.weight", {h, q});
    add(p + "post_attention_layernorm.weight", {h});
    add(p + "mlp.gate_proj.weight", {inter, h});
    add(p + "mlp.up_proj.weight", {inter, h});
    add(p + "mlp.down_proj.weight", {h, inter});
  }
  add("model.norm.weight", {h});
  if (!o.tie_word_embeddings) add("lm_head.weight", {o.vocab_size, h});
  return specs;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return absl::InternalError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

}  // namespace

std::string RandomCheckpointConfigJson(const RandomCheckpointOptions& o) {
  ordered_json c;
  c["architectures"] = {std::string(ArchitectureName(o.architecture))};
  c["model_type"] = o.architecture == Architecture::kLlama ? "llama" : o.architecture == Architecture::kMistral ? "mistral" : "qwen2";
  c["vocab_size"] = o.vocab_size;
  c["hidden_size"] = o.hidden_size;
  c["intermediate_size"] = o.intermediate_size;
  c["num_hidden_layers"] = o.num_layers;
  c["num_attention_heads"] = o.num_heads;
  c["num_key_value_heads"] = o.num_kv_heads;
  if (o.head_dim > 0 && o.architecture != Architecture::kQwen2) c["head_dim"] = o.head_dim;
  c["max_position_embeddings"] = o.max_position_embeddings;
  c["rms_norm_eps"] = o.rms_norm_eps;
  c["rope_theta"] = o.rope_theta;
  if (o.rope_scaling.type == RopeScaling::Type::kLlama3) {
    c["rope_scaling"] = {{"factor", o.rope_scaling.factor},
                         {"low_freq_factor", o.rope_scaling.low_freq_factor},
                         {"high_freq_factor", o.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", o.rope_scaling.original_max_position_embeddings},
                         {"rope_type", "llama3"}};
  } else {
    c["rope_scaling"] = nullptr;
  }
  c["tie_word_embeddings"] = o.tie_word_embeddings;
  c["hidden_act"] = "silu";
  if (o.architecture == Architecture::kMistral) {
    c["sliding_window"] = o.sliding_window > 0 ? ordered_json(o.sliding_window) : ordered_json(nullptr);
  }
  if (o.architecture == Architecture::kQwen2) {
    c["use_sliding_window"] = false;
    c["sliding_window"] = 4096;  // ignored by transformers unless use_sliding_window
  } else {
    c["attention_bias"] = false;
  }
  c["bos_token_id"] = o.bos_token_id;
  c["eos_token_id"] = o.eos_token_id;
  c["torch_dtype"] = o.dtype == DType::kBF16 ? "bfloat16" : o.dtype == DType::kF16 ? "float16" : "float32";
  return c.dump(2) + "\n";
}

absl::Status WriteRandomCheckpoint(const std::string& dir, const RandomCheckpointOptions& o) {
  if (o.vocab_size < 1 || o.hidden_size < 1 || o.intermediate_size < 1 || o.num_layers < 1 || o.num_heads < 1 ||
      o.num_kv_heads < 1 || o.num_heads % o.num_kv_heads != 0 || o.num_shards < 1 || HeadDim(o) < 2) {
    return absl::InvalidArgumentError("RandomCheckpointOptions: geometry out of range");
  }
  if (o.head_dim == 0 && o.hidden_size % o.num_heads != 0) {
    return absl::InvalidArgumentError("RandomCheckpointOptions: hidden_size % num_heads != 0 and no head_dim");
  }
  if (o.architecture == Architecture::kQwen2 && HeadDim(o) * o.num_heads != o.hidden_size) {
    return absl::InvalidArgumentError("RandomCheckpointOptions: Qwen2 requires head_dim == hidden_size / num_heads");
  }
  if (o.dtype != DType::kF32 && o.dtype != DType::kF16 && o.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("RandomCheckpointOptions: dtype must be F32, F16 or BF16");
  }
  ::mkdir(dir.c_str(), 0755);
  RETURN_IF_ERROR(WriteText(dir + "/config.json", RandomCheckpointConfigJson(o)));
  ordered_json gen;
  gen["bos_token_id"] = o.bos_token_id;
  gen["eos_token_id"] = o.extra_eos_token_id >= 0 ? ordered_json({o.eos_token_id, o.extra_eos_token_id})
                                                  : ordered_json(o.eos_token_id);
  RETURN_IF_ERROR(WriteText(dir + "/generation_config.json", gen.dump(2) + "\n"));

  const std::vector<TensorSpec> specs = Specs(o);
  auto fill = [&o](const TensorSpec& s, absl::Span<float> out) { FillTensor(o.seed, o.int4_grid, s, out); };
  if (o.num_shards == 1) return WriteSafetensors(dir + "/model.safetensors", specs, fill);

  // Contiguous runs of tensors, balanced by bytes.
  int64_t total_bytes = 0;
  for (const TensorSpec& s : specs) total_bytes += s.num_elements() * DTypeSizeBytes(s.dtype);
  std::vector<std::vector<TensorSpec>> shards(o.num_shards);
  int64_t running = 0;
  for (const TensorSpec& s : specs) {
    const int shard = std::min<int64_t>(o.num_shards - 1, running * o.num_shards / std::max<int64_t>(1, total_bytes));
    shards[shard].push_back(s);
    running += s.num_elements() * DTypeSizeBytes(s.dtype);
  }
  ordered_json index;
  index["metadata"] = {{"total_size", total_bytes}};
  index["weight_map"] = ordered_json::object();
  for (int i = 0; i < o.num_shards; ++i) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, o.num_shards);
    RETURN_IF_ERROR(WriteSafetensors(dir + "/" + name, shards[i], fill));
    for (const TensorSpec& s : shards[i]) index["weight_map"][s.name] = name;
  }
  return WriteText(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

absl::StatusOr<RandomCheckpointOptions> NamedShape(absl::string_view name) {
  RandomCheckpointOptions o;
  if (name == "llama-3.2-1b") {
    o.architecture = Architecture::kLlama;
    o.vocab_size = 128256;
    o.hidden_size = 2048;
    o.intermediate_size = 8192;
    o.num_layers = 16;
    o.num_heads = 32;
    o.num_kv_heads = 8;
    o.head_dim = 64;
    o.max_position_embeddings = 131072;
    o.rope_theta = 500000.0;
    o.rope_scaling.type = RopeScaling::Type::kLlama3;
    o.rope_scaling.factor = 32.0;
    o.rope_scaling.low_freq_factor = 1.0;
    o.rope_scaling.high_freq_factor = 4.0;
    o.rope_scaling.original_max_position_embeddings = 8192;
    o.tie_word_embeddings = true;
    o.bos_token_id = 128000;
    o.eos_token_id = 128001;
    o.extra_eos_token_id = 128009;
    o.dtype = DType::kBF16;
    return o;
  }
  if (name == "tiny-llama") return o;
  if (name == "tiny-mistral") {
    o.architecture = Architecture::kMistral;
    o.sliding_window = 16;
    return o;
  }
  if (name == "tiny-qwen2") {
    o.architecture = Architecture::kQwen2;
    o.tie_word_embeddings = true;
    return o;
  }
  return absl::NotFoundError(absl::StrCat("unknown shape '", name,
                                          "' (known: llama-3.2-1b, tiny-llama, tiny-mistral, tiny-qwen2)"));
}

absl::StatusOr<std::unique_ptr<Model>> WriteAndLoadRandomModel(const std::string& dir,
                                                               const RandomCheckpointOptions& options,
                                                               int num_threads) {
  RETURN_IF_ERROR(WriteRandomCheckpoint(dir, options));
  return Model::Load(dir, {.num_threads = num_threads});
}

}  // namespace kvspan::model::testing
