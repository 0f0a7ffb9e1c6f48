#include "model/model.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/weight_matrix.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "common/file_util.h"

namespace kvspan::model {
namespace {

// Rolls back every cache of the batch to its committed tokens (drops pending appends).
void RollBack(absl::Span<ForwardItem> batch) {
  for (ForwardItem& item : batch) item.cache->Truncate(item.cache->num_tokens());
}

// The matrices' format for `mode` and the checkpoint.
kernels::WeightFormat ResolveWeightFormat(WeightsMode mode, const SafetensorsCheckpoint& checkpoint) {
  switch (mode) {
    case WeightsMode::kInt4:
      return kernels::WeightFormat::kInt4;
    case WeightsMode::kF32:
      return kernels::WeightFormat::kF32;
    case WeightsMode::kBF16:
      return kernels::WeightFormat::kBF16;
    case WeightsMode::kInt8:
      return kernels::WeightFormat::kInt8;
    case WeightsMode::kAuto:
      break;
  }
  // A missing embedding is reported by LoadWeights.
  absl::StatusOr<const TensorInfo*> embed = checkpoint.Get("model.embed_tokens.weight");
  if (!embed.ok()) return kernels::WeightFormat::kF32;
  switch ((*embed)->dtype) {
    case DType::kBF16:
      return kernels::WeightFormat::kBF16;
    case DType::kF16:
      return kernels::WeightFormat::kF16;
    default:
      return kernels::WeightFormat::kF32;
  }
}

constexpr std::pair<WeightsMode, absl::string_view> kWeightsModeNames[] = {
    {WeightsMode::kAuto, "auto"}, {WeightsMode::kF32, "f32"},   {WeightsMode::kBF16, "bf16"},
    {WeightsMode::kInt8, "int8"}, {WeightsMode::kInt4, "int4"}};

// Whether holding `checkpoint`'s matrices in `format` changes their values (see LoadConfig).
bool ChangesValues(kernels::WeightFormat format, const SafetensorsCheckpoint& checkpoint) {
  switch (format) {
    case kernels::WeightFormat::kF32:
      return false;  // every float dtype converts to fp32 exactly
    case kernels::WeightFormat::kBF16:
    case kernels::WeightFormat::kF16:
      return format != ResolveWeightFormat(WeightsMode::kAuto, checkpoint);
    case kernels::WeightFormat::kInt8:
    case kernels::WeightFormat::kInt4:
      return true;
  }
  return true;
}

std::string FormatLabel(kernels::WeightFormat format, int group_size) {
  std::string label(kernels::WeightFormatName(format));
  if (format == kernels::WeightFormat::kInt4) absl::StrAppend(&label, "-g", group_size);
  return label;
}

}  // namespace

absl::string_view WeightsModeName(WeightsMode mode) {
  for (const auto& [m, name] : kWeightsModeNames) {
    if (m == mode) return name;
  }
  return "unknown";
}

absl::StatusOr<WeightsMode> ParseWeightsMode(absl::string_view name) {
  for (const auto& [m, n] : kWeightsModeNames) {
    if (n == name) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("weights '", name, "' is not one of auto, f32, bf16, int8, int4"));
}

void AddWeightsFlag(FlagSet& flags, WeightsChoice* target) {
  flags.Add(
      "weights",
      [target](const std::string& value) -> absl::Status {
        absl::StatusOr<WeightsMode> mode = ParseWeightsMode(value);
        if (!mode.ok()) return absl::InvalidArgumentError(absl::StrCat("--", mode.status().message()));
        target->mode = *mode;
        return absl::OkStatus();
      },
      std::string(WeightsModeName(target->mode)),
      "weight matrices in memory: auto (the checkpoint's dtype), f32, bf16, int8 (per channel), "
      "int4 (group-wise; docs/performance.md)");
  flags.Add("weights-group", &target->group_size, "weights per fp16 scale with --weights int4 (a multiple of 32)");
}

namespace {

absl::Status CheckWeightsChoice(const WeightsChoice& weights) {
  if (weights.mode == WeightsMode::kInt4 && (weights.group_size < 32 || weights.group_size % 32 != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--weights-group ", weights.group_size, " is not a positive multiple of 32"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> Model::LoadConfig(const std::string& dir, const WeightsChoice& weights) {
  RETURN_IF_ERROR(CheckWeightsChoice(weights));
  ASSIGN_OR_RETURN(std::string config_json, ReadFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(config_json));
  const std::string generation_path = dir + "/generation_config.json";
  if (FileExists(generation_path)) {
    ASSIGN_OR_RETURN(std::string generation_json, ReadFile(generation_path));
    RETURN_IF_ERROR(config.MergeGenerationConfig(generation_json));
  }
  ASSIGN_OR_RETURN(auto checkpoint, SafetensorsCheckpoint::OpenDir(dir));
  std::string identity = absl::StrCat(config_json, "\n", checkpoint->FingerprintBytes());
  const kernels::WeightFormat format = ResolveWeightFormat(weights.mode, *checkpoint);
  if (ChangesValues(format, *checkpoint)) absl::StrAppend(&identity, "\nweights ", FormatLabel(format, weights.group_size));
  config.fingerprint = FingerprintHex(identity);
  return config;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir, const ModelOptions& options) {
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat("ModelOptions.num_threads = ", options.num_threads, " < 0"));
  }
  if (options.pool_spin_micros < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ModelOptions.pool_spin_micros = ", options.pool_spin_micros, " < 0"));
  }
  if (options.cpu_isa.has_value() && !kernels::CpuSupportsIsa(DetectCpuFeatures(), *options.cpu_isa)) {
    return absl::InvalidArgumentError(absl::StrCat("ModelOptions.cpu_isa = ", kernels::CpuIsaName(*options.cpu_isa),
                                                   ": this CPU cannot run it"));
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadConfig(dir, options.weights));
  ASSIGN_OR_RETURN(auto checkpoint, SafetensorsCheckpoint::OpenDir(dir));
  const int num_threads = options.num_threads == 0 ? DefaultNumThreads() : options.num_threads;
  ThreadPool load_pool(num_threads);
  const kernels::WeightFormat format = ResolveWeightFormat(options.weights.mode, *checkpoint);
  ASSIGN_OR_RETURN(internal::Weights weights, internal::LoadWeights(*checkpoint, config, format,
                                                                    options.weights.group_size, &load_pool));
  return std::unique_ptr<Model>(new Model(std::move(config), std::move(weights), options));
}

std::string Model::weight_format_label() const {
  return FormatLabel(weights_.embed.format, weights_.embed.group_size);
}

std::vector<float> RopeInvFreqFor(const ModelConfig& config) {
  kernels::RopeFrequencyOptions rope;
  rope.head_dim = config.head_dim;
  rope.theta = config.rope_theta;
  rope.llama3_scaling = config.rope_scaling.type == RopeScaling::Type::kLlama3;
  rope.factor = config.rope_scaling.factor;
  rope.low_freq_factor = config.rope_scaling.low_freq_factor;
  rope.high_freq_factor = config.rope_scaling.high_freq_factor;
  rope.original_max_position_embeddings = config.rope_scaling.original_max_position_embeddings;
  return kernels::RopeInvFreq(rope);
}

Model::Model(ModelConfig config, internal::Weights weights, const ModelOptions& options)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      isa_(options.cpu_isa.value_or(kernels::SelectedCpuIsa().isa)) {
  const int num_threads = options.num_threads <= 0 ? DefaultNumThreads() : options.num_threads;
  pool_ = std::make_unique<ThreadPool>(num_threads, options.pool_spin_micros);
  kernels::SetBlasThreads(num_threads);
  inv_freq_ = RopeInvFreqFor(config_);
}

absl::StatusOr<std::unique_ptr<DenseKvCache>> Model::NewDenseCache(int capacity_tokens) const {
  if (capacity_tokens < 1 || capacity_tokens > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("capacity_tokens = ", capacity_tokens, " is outside [1, ",
                                                   config_.max_position_embeddings, "]"));
  }
  DenseKvCache::Options o;
  o.num_layers = config_.num_layers;
  o.num_heads = config_.num_heads;
  o.num_kv_heads = config_.num_kv_heads;
  o.head_dim = config_.head_dim;
  o.capacity_tokens = capacity_tokens;
  o.sliding_window = config_.sliding_window;
  return DenseKvCache::Create(o);
}

int64_t Model::weight_bytes() const {
  int64_t bytes = static_cast<int64_t>(weights_.final_norm.size() * sizeof(float)) + weights_.output().size_bytes();
  for (const internal::LayerWeights& l : weights_.layers) {
    bytes += static_cast<int64_t>((l.attn_norm.size() + l.qkv_bias.size() + l.mlp_norm.size()) * sizeof(float)) +
             l.qkv.size_bytes() + l.o.size_bytes() + l.gate_up.size_bytes() + l.down.size_bytes();
  }
  return bytes;
}

int64_t Model::weight_memory_bytes() const {
  return weight_bytes() + (weights_.lm_head.rows == 0 ? 0 : weights_.embed.size_bytes());
}

absl::Status ValidateForwardTokens(const ModelConfig& c, size_t item, absl::Span<const int32_t> tokens,
                                   absl::Span<const int32_t> positions, int64_t first_position) {
  const size_t i = item;
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, " has no tokens"));
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, ": token id ", t,
                                                     " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (!positions.empty()) {
    if (positions.size() != tokens.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Forward: item ", i, " has ", positions.size(), " positions for ", tokens.size(), " tokens"));
    }
    for (int32_t p : positions) {
      if (p < 0 || p >= c.max_position_embeddings) {
        return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, ": position ", p, " is outside [0, ",
                                                       c.max_position_embeddings, ")"));
      }
    }
  }
  const int64_t end = first_position + static_cast<int64_t>(tokens.size());
  if (positions.empty() && end > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, ": positions up to ", end - 1,
                                                   " exceed max_position_embeddings = ", c.max_position_embeddings));
  }
  return absl::OkStatus();
}

absl::Status Model::Forward(absl::Span<ForwardItem> batch) const {
  const ModelConfig& c = config_;
  if (batch.empty()) return absl::InvalidArgumentError("Forward: empty batch");
  // Validate everything before any cache is touched.
  absl::flat_hash_set<const KvCache*> caches;
  int total = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const ForwardItem& item = batch[i];
    if (item.cache == nullptr || item.logits == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, " has a null cache or logits"));
    }
    if (!caches.insert(item.cache).second) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, " reuses another item's cache"));
    }
    RETURN_IF_ERROR(ValidateForwardTokens(c, i, item.tokens, item.positions, item.cache->num_tokens()));
    total += static_cast<int>(item.tokens.size());
  }

  const int hidden = c.hidden_size, hd = c.head_dim, half = hd / 2;
  const int q_width = c.num_heads * hd, kv_width = c.num_kv_heads * hd;
  const int qkv_width = q_width + 2 * kv_width;
  const int inter = c.intermediate_size;
  // Scratch for the step (one allocation per buffer per call, none per token or layer).
  std::vector<float> x(int64_t{total} * hidden), xn(int64_t{total} * hidden);
  std::vector<float> qkv(int64_t{total} * qkv_width), attn(int64_t{total} * q_width);
  std::vector<float> gate_up(int64_t{total} * 2 * inter), act(int64_t{total} * inter);
  std::vector<float> cos(int64_t{total} * half), sin(int64_t{total} * half);
  std::vector<int32_t> positions(total);
  std::vector<int> offsets(batch.size());  // first stacked row of each item
  const kernels::WeightMatrix embed = weights_.embed.view();
  {
    int row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      offsets[i] = row;
      const int start = batch[i].cache->num_tokens();
      for (size_t j = 0; j < batch[i].tokens.size(); ++j, ++row) {
        positions[row] = batch[i].positions.empty() ? start + static_cast<int>(j) : batch[i].positions[j];
        kernels::DequantizeRow(embed, batch[i].tokens[j], &x[int64_t{row} * hidden]);
      }
    }
  }
  kernels::RopeCosSin(positions.data(), total, inv_freq_.data(), half, cos.data(), sin.data());

  ThreadPool* const pool = pool_.get();
  kernels::RmsNormParams norm;
  norm.x = x.data();
  norm.x_row_stride = hidden;
  norm.out = xn.data();
  norm.out_row_stride = hidden;
  norm.num_rows = total;
  norm.dim = hidden;
  norm.eps = static_cast<float>(c.rms_norm_eps);

  for (int l = 0; l < c.num_layers; ++l) {
    const internal::LayerWeights& w = weights_.layers[l];
    norm.weight = w.attn_norm.data();
    kernels::RmsNorm(norm);
    kernels::Linear({.x = xn.data(), .w = w.qkv.view(), .bias = w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(),
                     .y = qkv.data(), .m = total, .pool = pool},
                    isa_);
    kernels::ApplyRope({.x = qkv.data(), .x_row_stride = qkv_width, .cos = cos.data(), .sin = sin.data(),
                        .num_tokens = total, .num_heads = c.num_heads, .head_dim = hd});
    kernels::ApplyRope({.x = qkv.data() + q_width, .x_row_stride = qkv_width, .cos = cos.data(),
                        .sin = sin.data(), .num_tokens = total, .num_heads = c.num_kv_heads, .head_dim = hd});
    for (size_t i = 0; i < batch.size(); ++i) {
      const float* rows = qkv.data() + int64_t{offsets[i]} * qkv_width;
      LayerQkv in;
      in.num_new = static_cast<int>(batch[i].tokens.size());
      in.row_stride = qkv_width;
      in.q = rows;
      in.k = rows + q_width;
      in.v = rows + q_width + kv_width;
      absl::Status s = batch[i].cache->AppendAndAttend(l, in, attn.data() + int64_t{offsets[i]} * q_width, pool_.get());
      if (!s.ok()) {
        RollBack(batch);
        return s;
      }
    }
    kernels::Linear({.x = attn.data(), .w = w.o.view(), .y = x.data(), .m = total, .beta = 1.0f, .pool = pool},
                    isa_);
    norm.weight = w.mlp_norm.data();
    kernels::RmsNorm(norm);
    kernels::Linear({.x = xn.data(), .w = w.gate_up.view(), .y = gate_up.data(), .m = total, .pool = pool},
                    isa_);
    kernels::SiluMul({.gate = gate_up.data(), .up = gate_up.data() + inter, .in_row_stride = 2 * inter,
                      .out = act.data(), .out_row_stride = inter, .num_rows = total, .dim = inter});
    kernels::Linear({.x = act.data(), .w = w.down.view(), .y = x.data(), .m = total, .beta = 1.0f, .pool = pool},
                    isa_);
  }
  // Two-phase commit: all caches take their tokens, or none does.
  for (size_t i = 0; i < batch.size(); ++i) {
    absl::Status s = batch[i].cache->PrepareCommit(static_cast<int>(batch[i].tokens.size()));
    if (!s.ok()) {
      RollBack(batch);
      return s;
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    absl::Status s = batch[i].cache->Commit(static_cast<int>(batch[i].tokens.size()));
    // A broken KvCache contract (Commit failed after PrepareCommit succeeded): the batch
    // may be part-committed.
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("Forward: item ", i, ": Commit failed after PrepareCommit: ",
                                              s.message()));
    }
  }

  // Final norm and lm_head over the rows whose logits are wanted, stacked.
  std::vector<int> rows;
  for (size_t i = 0; i < batch.size(); ++i) {
    const int n = static_cast<int>(batch[i].tokens.size());
    if (batch[i].logits_mode == LogitsMode::kAllTokens) {
      for (int j = 0; j < n; ++j) rows.push_back(offsets[i] + j);
    } else {
      rows.push_back(offsets[i] + n - 1);
    }
  }
  const int num_rows = static_cast<int>(rows.size());
  for (int r = 0; r < num_rows; ++r) {
    kernels::RmsNorm({.x = &x[int64_t{rows[r]} * hidden], .x_row_stride = hidden, .weight = weights_.final_norm.data(),
                      .out = &xn[int64_t{r} * hidden], .out_row_stride = hidden, .num_rows = 1, .dim = hidden,
                      .eps = static_cast<float>(c.rms_norm_eps)});
  }
  const int64_t vocab = c.vocab_size;
  std::vector<float> stacked;
  float* logits = nullptr;
  if (batch.size() == 1) {  // write straight into the caller's vector
    batch[0].logits->resize(num_rows * vocab);
    logits = batch[0].logits->data();
  } else {
    stacked.resize(num_rows * vocab);
    logits = stacked.data();
  }
  kernels::Linear({.x = xn.data(), .w = weights_.output().view(), .y = logits, .m = num_rows, .pool = pool},
                  isa_);
  if (batch.size() > 1) {
    int r = 0;
    for (ForwardItem& item : batch) {
      const int n = item.logits_mode == LogitsMode::kAllTokens ? static_cast<int>(item.tokens.size()) : 1;
      item.logits->assign(stacked.begin() + r * vocab, stacked.begin() + (r + n) * vocab);
      r += n;
    }
  }
  return absl::OkStatus();
}

}  // namespace kvspan::model
