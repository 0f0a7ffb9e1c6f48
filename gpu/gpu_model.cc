#include "gpu/gpu_model.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "kernels/cuda/elementwise_cuda.h"
#include "kernels/cuda/sampling_cuda.h"
#include "model/internal/weights.h"
#include "model/safetensors.h"

namespace kvspan::gpu {
namespace {

using kernels::DeviceBuffer;

template <typename Buffer>
absl::Status UploadFloats(const Buffer& host, DeviceBuffer* device) {
  return device->Assign(host.data(), static_cast<int64_t>(host.size()) * 4);
}

// Grows `buffer` to hold `count` elements of `bytes_each`.
absl::Status Grow(DeviceBuffer& buffer, int64_t count, int64_t bytes_each) {
  return buffer.Reserve(std::max<int64_t>(1, count) * bytes_each);
}

absl::Status CheckSample(const GpuDeviceSample& sample, model::LogitsMode mode, size_t item) {
  if (mode != model::LogitsMode::kLastToken || sample.token_out == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("Forward: item ", item, ": a device sample needs kLastToken logits and a token_out"));
  }
  const absl::Status valid = model::ValidateSamplingOptions(sample.options);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("Forward: item ", item, ": ", valid.message()));
  if (sample.options.temperature != 0 && !(sample.u >= 0 && sample.u < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: item ", item, ": u must be in [0, 1), got ", sample.u));
  }
  return absl::OkStatus();
}

// CreateRandom's shape checks: what its matrices and the forward pass need.
absl::Status CheckRandomShape(const model::ModelConfig& c) {
  const std::pair<const char*, int> positive[] = {
      {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
      {"num_layers", c.num_layers}, {"num_heads", c.num_heads},     {"num_kv_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},     {"max_position_embeddings", c.max_position_embeddings}};
  for (const auto& [name, value] : positive) {
    if (value < 1) return absl::InvalidArgumentError(absl::StrCat("CreateRandom: ", name, " = ", value, " < 1"));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateRandom: num_heads ", c.num_heads, " is not a multiple of num_kv_heads ", c.num_kv_heads));
  }
  if (c.head_dim % 2 != 0 || c.head_dim > kernels::kCudaSpanMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("CreateRandom: head_dim ", c.head_dim, " is odd or above ",
                                                   kernels::kCudaSpanMaxHeadDim));
  }
  return absl::OkStatus();
}

// The dimensions that fix CreateRandom's weights, for its fingerprint.
std::string ShapeLabel(const model::ModelConfig& c) {
  return absl::StrCat("v", c.vocab_size, "-h", c.hidden_size, "-i", c.intermediate_size, "-l", c.num_layers, "-q",
                      c.num_heads, "-kv", c.num_kv_heads, "-d", c.head_dim, c.tie_word_embeddings ? "-tied" : "",
                      c.qkv_bias ? "-qkvbias" : "");
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::OnDevice(const GpuModelOptions& options) {
  const int devices = kernels::CudaDeviceCount();
  if (options.device < 0 || options.device >= devices) {
    return absl::UnavailableError(absl::StrCat("no CUDA device ", options.device, " (", devices, " visible)"));
  }
  RETURN_IF_ERROR(kernels::CudaSetDevice(options.device));
  std::unique_ptr<GpuModel> m(new GpuModel());
  m->device_ = options.device;
  if (options.gemm != GpuGemm::kPlain) {
    absl::StatusOr<std::unique_ptr<kernels::CublasLtLinear>> lt = kernels::CublasLtLinear::Create();
    if (lt.ok()) {
      m->lt_ = std::move(*lt);
    } else if (options.gemm == GpuGemm::kCublasLt || lt.status().code() != absl::StatusCode::kUnimplemented) {
      return lt.status();
    }
  }
  return m;
}

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::Load(const std::string& dir, const GpuModelOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> m, OnDevice(options));
  const model::WeightsChoice bf16{model::WeightsMode::kBF16, 32};
  ASSIGN_OR_RETURN(m->config_, model::Model::LoadConfig(dir, bf16));
  const model::ModelConfig& c = m->config_;
  ASSIGN_OR_RETURN(auto checkpoint, model::SafetensorsCheckpoint::OpenDir(dir));
  model::internal::Weights weights;
  {
    ThreadPool pool(DefaultNumThreads());
    ASSIGN_OR_RETURN(weights, model::internal::LoadWeights(*checkpoint, c, kernels::WeightFormat::kBF16, 0, &pool));
  }
  auto upload_matrix = [&](const model::internal::WeightBuffer& w, Matrix* out) -> absl::Status {
    out->rows = w.rows;
    out->cols = w.cols;
    m->weight_bytes_ += static_cast<int64_t>(w.data.size());
    return out->data.Assign(w.data.data(), static_cast<int64_t>(w.data.size()));
  };
  RETURN_IF_ERROR(upload_matrix(weights.embed, &m->embed_));
  if (weights.lm_head.rows != 0) RETURN_IF_ERROR(upload_matrix(weights.lm_head, &m->lm_head_));
  m->layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const model::internal::LayerWeights& w = weights.layers[l];
    Layer& g = m->layers_[l];
    RETURN_IF_ERROR(UploadFloats(w.attn_norm, &g.attn_norm));
    RETURN_IF_ERROR(UploadFloats(w.mlp_norm, &g.mlp_norm));
    g.has_qkv_bias = !w.qkv_bias.empty();
    if (g.has_qkv_bias) RETURN_IF_ERROR(UploadFloats(w.qkv_bias, &g.qkv_bias));
    RETURN_IF_ERROR(upload_matrix(w.qkv, &g.qkv));
    RETURN_IF_ERROR(upload_matrix(w.o, &g.o));
    RETURN_IF_ERROR(upload_matrix(w.gate_up, &g.gate_up));
    RETURN_IF_ERROR(upload_matrix(w.down, &g.down));
  }
  RETURN_IF_ERROR(UploadFloats(weights.final_norm, &m->final_norm_));
  RETURN_IF_ERROR(UploadFloats(model::RopeInvFreqFor(c), &m->inv_freq_));
  return m;
}

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::CreateRandom(const model::ModelConfig& config, uint64_t seed,
                                                                  const GpuModelOptions& options) {
  RETURN_IF_ERROR(CheckRandomShape(config));
  ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> m, OnDevice(options));
  m->config_ = config;
  m->config_.fingerprint = absl::StrCat("random:", seed, ":", ShapeLabel(config),
                                        config.fingerprint.empty() ? "" : ":", config.fingerprint);
  const model::ModelConfig& c = m->config_;
  uint64_t tensor = 0;  // the matrix's index t in the contract's order
  auto random_matrix = [&](int rows, int cols, Matrix* out) -> absl::Status {
    out->rows = rows;
    out->cols = cols;
    const int64_t count = int64_t{rows} * cols;
    RETURN_IF_ERROR(out->data.Reserve(count * 2));
    m->weight_bytes_ += count * 2;
    kernels::RandomUniformBf16Params p;
    p.out = out->data.as<uint16_t>();
    p.count = count;
    p.seed = kernels::RandomFillSeed(seed, tensor++);
    p.bound = 1.0f / std::sqrt(static_cast<float>(cols));
    return kernels::RandomUniformBf16Cuda(p, nullptr);
  };
  const int q_width = c.num_heads * c.head_dim, kv_width = c.num_kv_heads * c.head_dim;
  const std::vector<float> ones(c.hidden_size, 1.0f), zero_bias(c.qkv_bias ? q_width + 2 * kv_width : 0, 0.0f);
  RETURN_IF_ERROR(random_matrix(c.vocab_size, c.hidden_size, &m->embed_));
  m->layers_.resize(c.num_layers);
  for (Layer& g : m->layers_) {
    RETURN_IF_ERROR(UploadFloats(ones, &g.attn_norm));
    RETURN_IF_ERROR(UploadFloats(ones, &g.mlp_norm));
    g.has_qkv_bias = c.qkv_bias;
    if (g.has_qkv_bias) RETURN_IF_ERROR(UploadFloats(zero_bias, &g.qkv_bias));
    RETURN_IF_ERROR(random_matrix(q_width + 2 * kv_width, c.hidden_size, &g.qkv));
    RETURN_IF_ERROR(random_matrix(c.hidden_size, q_width, &g.o));
    RETURN_IF_ERROR(random_matrix(2 * c.intermediate_size, c.hidden_size, &g.gate_up));
    RETURN_IF_ERROR(random_matrix(c.hidden_size, c.intermediate_size, &g.down));
  }
  if (!c.tie_word_embeddings) RETURN_IF_ERROR(random_matrix(c.vocab_size, c.hidden_size, &m->lm_head_));
  RETURN_IF_ERROR(UploadFloats(ones, &m->final_norm_));
  RETURN_IF_ERROR(UploadFloats(model::RopeInvFreqFor(c), &m->inv_freq_));
  RETURN_IF_ERROR(kernels::CudaSynchronize());
  return m;
}

absl::StatusOr<std::unique_ptr<GpuKvCache>> GpuModel::NewCache(int capacity_tokens,
                                                                const GpuCacheOptions& options) const {
  return GpuKvCache::Create(config_, capacity_tokens, options);
}

absl::Status GpuModel::Linear(const kernels::LinearCudaParams& p) {
  return lt_ != nullptr ? lt_->Run(p, nullptr) : kernels::LinearCuda(p, nullptr);
}

std::array<int64_t, GpuModel::kScratchBuffers> GpuModel::ScratchFloats(int total, int logits_rows) const {
  const model::ModelConfig& c = config_;
  const int64_t qkv_width = int64_t{c.num_heads + 2 * c.num_kv_heads} * c.head_dim;
  // The order of scratch_: x, xn, qkv, attn, gate_up, act, ids, positions, logits.
  return {int64_t{total} * c.hidden_size,
          int64_t{total} * c.hidden_size,
          total * qkv_width,
          int64_t{total} * c.num_heads * c.head_dim,
          int64_t{total} * 2 * c.intermediate_size,
          int64_t{total} * c.intermediate_size,
          total,
          total,
          int64_t{logits_rows} * c.vocab_size};
}

int64_t GpuModel::StepScratchBytes(int tokens, int logits_rows) const {
  int64_t bytes = 0;
  for (int64_t floats : ScratchFloats(tokens, logits_rows)) bytes += std::max<int64_t>(1, floats) * 4;
  return bytes;
}

absl::Status GpuModel::Reserve(int total, int logits_rows) {
  const std::array<int64_t, kScratchBuffers> floats = ScratchFloats(total, logits_rows);
  for (int i = 0; i < kScratchBuffers; ++i) RETURN_IF_ERROR(Grow(*scratch_[i], floats[i], 4));
  return absl::OkStatus();
}

absl::Status GpuModel::Forward(absl::Span<GpuForwardItem> batch) {
  const model::ModelConfig& c = config_;
  if (batch.empty()) return absl::InvalidArgumentError("Forward: empty batch");
  absl::flat_hash_set<const GpuKvCache*> caches;
  int total = 0, logits_rows = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const GpuForwardItem& item = batch[i];
    if (item.cache == nullptr || (item.logits == nullptr && item.sample == nullptr)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Forward: item ", i, " has a null cache or neither logits nor sample"));
    }
    if (item.sample != nullptr) RETURN_IF_ERROR(CheckSample(*item.sample, item.logits_mode, i));
    if (!caches.insert(item.cache).second) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: item ", i, " reuses another item's cache"));
    }
    RETURN_IF_ERROR(model::ValidateForwardTokens(c, i, item.tokens, {}, item.cache->num_tokens()));
    const int64_t end = int64_t{item.cache->num_tokens()} + static_cast<int64_t>(item.tokens.size());
    if (end > item.cache->capacity()) {
      return absl::ResourceExhaustedError(absl::StrCat("Forward: item ", i, ": ", end, " tokens exceed the cache's ",
                                                       item.cache->capacity()));
    }
    total += static_cast<int>(item.tokens.size());
    logits_rows += item.logits_mode == model::LogitsMode::kAllTokens ? static_cast<int>(item.tokens.size()) : 1;
  }

  // Logits rows: the sampled items' first (one SampleCuda over rows [0, num_sampled)), then
  // the others' in batch order.
  std::vector<int> logits_row(batch.size());
  int num_sampled = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].sample != nullptr) logits_row[i] = num_sampled++;
  }
  for (size_t i = 0, r = num_sampled; i < batch.size(); ++i) {
    if (batch[i].sample != nullptr) continue;
    logits_row[i] = static_cast<int>(r);
    r += batch[i].logits_mode == model::LogitsMode::kAllTokens ? batch[i].tokens.size() : 1;
  }

  const int hidden = c.hidden_size, hd = c.head_dim, inter = c.intermediate_size;
  const int q_width = c.num_heads * hd, kv_width = c.num_kv_heads * hd;
  const int qkv_width = q_width + 2 * kv_width;
  const int num_items = static_cast<int>(batch.size());
  RETURN_IF_ERROR(Reserve(total, logits_rows));

  std::vector<int32_t> ids(total), positions(total), offsets(num_items), tail_len(num_items), first(num_items);
  std::vector<int32_t> num_q(num_items);
  for (int i = 0, row = 0; i < num_items; ++i) {
    offsets[i] = row;
    first[i] = batch[i].cache->num_tokens();
    num_q[i] = static_cast<int32_t>(batch[i].tokens.size());
    tail_len[i] = first[i] + num_q[i];
    for (int j = 0; j < num_q[i]; ++j, ++row) {
      ids[row] = batch[i].tokens[j];
      positions[row] = first[i] + j;
    }
  }
  for (int i = 0; i < num_items; ++i) {
    RETURN_IF_ERROR(batch[i].cache->EnsureDense(tail_len[i] - batch[i].cache->num_compressed_tokens()));
  }
  RETURN_IF_ERROR(ids_.CopyFromHost(ids.data(), int64_t{total} * 4));
  RETURN_IF_ERROR(positions_.CopyFromHost(positions.data(), int64_t{total} * 4));

  float* const x = x_.as<float>();
  float* const xn = xn_.as<float>();
  float* const qkv = qkv_.as<float>();
  kernels::EmbeddingCudaParams embed;
  embed.table = embed_.data.as<uint16_t>();
  embed.ids = ids_.as<int32_t>();
  embed.out = x;
  embed.out_row_stride = hidden;
  embed.num_tokens = total;
  embed.dim = hidden;
  embed.vocab = c.vocab_size;
  RETURN_IF_ERROR(kernels::EmbeddingCuda(embed, nullptr));

  kernels::RmsNormParams norm;
  norm.x = x;
  norm.x_row_stride = hidden;
  norm.out = xn;
  norm.out_row_stride = hidden;
  norm.num_rows = total;
  norm.dim = hidden;
  norm.eps = static_cast<float>(c.rms_norm_eps);
  auto linear = [&](const float* in, int64_t in_stride, const Matrix& w, const float* bias, float* out,
                    int64_t out_stride, float beta) {
    kernels::LinearCudaParams p;
    p.x = in;
    p.x_row_stride = in_stride;
    p.w = w.data.as<uint16_t>();
    p.bias = bias;
    p.y = out;
    p.y_row_stride = out_stride;
    p.m = total;
    p.n = w.rows;
    p.k = w.cols;
    p.beta = beta;
    return Linear(p);
  };
  kernels::RopeCudaParams rope;
  rope.x_row_stride = qkv_width;
  rope.positions = positions_.as<int32_t>();
  rope.inv_freq = inv_freq_.as<float>();
  rope.num_tokens = total;
  rope.head_dim = hd;

  // Attention's batch: per item, its cache's compressed blocks of the layer, then its dense
  // tail [num_compressed_tokens, num_tokens + n) read from the dense rows.
  std::vector<const float*> tail_k(num_items), tail_v(num_items);
  std::vector<int32_t> tail_tokens(num_items);
  for (int i = 0; i < num_items; ++i) tail_tokens[i] = tail_len[i] - batch[i].cache->num_compressed_tokens();
  std::vector<int64_t> tail_head_strides(num_items);
  for (int i = 0; i < num_items; ++i) tail_head_strides[i] = int64_t{batch[i].cache->dense_capacity_} * hd;
  std::vector<kernels::SpanBlockView> blocks;
  std::vector<int32_t> block_indptr;
  kernels::SpanAttentionBatch attn;
  attn.num_seqs = num_items;
  attn.num_kv_heads = c.num_kv_heads;
  attn.group = c.num_heads / c.num_kv_heads;
  attn.head_dim = hd;
  attn.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  attn.window = c.sliding_window;
  attn.num_q = num_q.data();
  attn.q = qkv;
  attn.q_row_stride = qkv_width;
  attn.out = attn_.as<float>();
  attn.tail_k = tail_k.data();
  attn.tail_v = tail_v.data();
  attn.tail_len = tail_tokens.data();
  attn.tail_head_strides = tail_head_strides.data();
  attn.tail_token_stride = hd;
  attn.query_position = first.data();
  // The blocks of layer l: per (item, KV head), its cache's spans in order.
  auto gather_blocks = [&](int l) {
    blocks.clear();
    block_indptr.assign(1, 0);
    for (int i = 0; i < num_items; ++i) {
      for (int g = 0; g < c.num_kv_heads; ++g) {
        for (const GpuKvCache::DeviceSpan& span : batch[i].cache->device_spans_) {
          const std::vector<kernels::SpanBlockView>& views = span.heads[int64_t{l} * c.num_kv_heads + g];
          blocks.insert(blocks.end(), views.begin(), views.end());
        }
        block_indptr.push_back(static_cast<int32_t>(blocks.size()));
      }
    }
    attn.block_indptr = block_indptr.data();
    attn.blocks = blocks.empty() ? nullptr : blocks.data();
  };

  for (int l = 0; l < c.num_layers; ++l) {
    const Layer& w = layers_[l];
    norm.weight = w.attn_norm.as<float>();
    RETURN_IF_ERROR(kernels::RmsNormCuda(norm, nullptr));
    RETURN_IF_ERROR(linear(xn, hidden, w.qkv, w.has_qkv_bias ? w.qkv_bias.as<float>() : nullptr, qkv, qkv_width, 0.0f));
    rope.x = qkv;
    rope.num_heads = c.num_heads;
    RETURN_IF_ERROR(kernels::RopeCuda(rope, nullptr));
    rope.x = qkv + q_width;
    rope.num_heads = c.num_kv_heads;
    RETURN_IF_ERROR(kernels::RopeCuda(rope, nullptr));
    for (int i = 0; i < num_items; ++i) {
      GpuKvCache& cache = *batch[i].cache;
      kernels::KvAppendCudaParams append;
      append.k = qkv + int64_t{offsets[i]} * qkv_width + q_width;
      append.v = append.k + kv_width;
      append.src_row_stride = qkv_width;
      append.cache_k = cache.k_.as<float>() + l * cache.layer_floats_;
      append.cache_v = cache.v_.as<float>() + l * cache.layer_floats_;
      append.head_stride = int64_t{cache.dense_capacity_} * hd;
      append.first = first[i] - cache.num_compressed_tokens();
      append.num_tokens = num_q[i];
      append.num_kv_heads = c.num_kv_heads;
      append.head_dim = hd;
      RETURN_IF_ERROR(kernels::KvAppendCuda(append, nullptr));
      tail_k[i] = append.cache_k;
      tail_v[i] = append.cache_v;
    }
    gather_blocks(l);
    RETURN_IF_ERROR(attention_.Run(attn, nullptr));
    RETURN_IF_ERROR(linear(attn_.as<float>(), q_width, w.o, nullptr, x, hidden, 1.0f));
    norm.weight = w.mlp_norm.as<float>();
    RETURN_IF_ERROR(kernels::RmsNormCuda(norm, nullptr));
    RETURN_IF_ERROR(linear(xn, hidden, w.gate_up, nullptr, gate_up_.as<float>(), 2 * inter, 0.0f));
    kernels::SiluMulParams act;
    act.gate = gate_up_.as<float>();
    act.up = gate_up_.as<float>() + inter;
    act.in_row_stride = 2 * inter;
    act.out = act_.as<float>();
    act.out_row_stride = inter;
    act.num_rows = total;
    act.dim = inter;
    RETURN_IF_ERROR(kernels::SiluMulCuda(act, nullptr));
    RETURN_IF_ERROR(linear(act_.as<float>(), inter, w.down, nullptr, x, hidden, 1.0f));
  }

  // Final norm of the rows whose logits are wanted, stacked into xn, then lm_head.
  for (int i = 0; i < num_items; ++i) {
    const bool all = batch[i].logits_mode == model::LogitsMode::kAllTokens;
    kernels::RmsNormParams fn = norm;
    fn.x = x + int64_t{offsets[i] + (all ? 0 : num_q[i] - 1)} * hidden;
    fn.out = xn + int64_t{logits_row[i]} * hidden;
    fn.weight = final_norm_.as<float>();
    fn.num_rows = all ? num_q[i] : 1;
    RETURN_IF_ERROR(kernels::RmsNormCuda(fn, nullptr));
  }
  const Matrix& out = lm_head_.rows != 0 ? lm_head_ : embed_;
  kernels::LinearCudaParams lp;
  lp.x = xn;
  lp.x_row_stride = hidden;
  lp.w = out.data.as<uint16_t>();
  lp.y = logits_.as<float>();
  lp.y_row_stride = c.vocab_size;
  lp.m = logits_rows;
  lp.n = out.rows;
  lp.k = out.cols;
  RETURN_IF_ERROR(Linear(lp));
  std::vector<int32_t> tokens(num_sampled);
  if (num_sampled > 0) {
    std::vector<kernels::SampleCudaRow> rows(num_sampled);
    for (int i = 0; i < num_items; ++i) {
      const GpuDeviceSample* sample = batch[i].sample;
      if (sample == nullptr) continue;
      rows[logits_row[i]] = {.temperature = sample->options.temperature,
                             .top_k = sample->options.top_k,
                             .top_p = sample->options.top_p,
                             .u = sample->u};
    }
    RETURN_IF_ERROR(Grow(tokens_, num_sampled, 4));
    kernels::SampleCudaParams sp;
    sp.logits = logits_.as<float>();
    sp.row_stride = c.vocab_size;
    sp.rows = rows.data();
    sp.out = tokens_.as<int32_t>();
    sp.num_rows = num_sampled;
    sp.vocab = c.vocab_size;
    RETURN_IF_ERROR(kernels::SampleCuda(sp, nullptr));
  }
  RETURN_IF_ERROR(kernels::CudaSynchronize());
  // Back to the host: the tokens, and the logits rows from the first one an item wants.
  int first_row = logits_rows;
  for (int i = 0; i < num_items; ++i) {
    if (batch[i].logits != nullptr) first_row = std::min(first_row, logits_row[i]);
  }
  std::vector<float> logits(int64_t{logits_rows - first_row} * c.vocab_size);
  RETURN_IF_ERROR(logits_.CopyToHost(logits.data(), static_cast<int64_t>(logits.size()) * 4,
                                     int64_t{first_row} * c.vocab_size * 4));
  if (num_sampled > 0) RETURN_IF_ERROR(tokens_.CopyToHost(tokens.data(), int64_t{num_sampled} * 4));
  // The spans the new tokens complete, compressed and uploaded into staged state: a
  // compressor's error leaves every cache as it was.
  std::vector<std::vector<kvcache::Span>> staged_spans(num_items);
  std::vector<std::vector<GpuKvCache::DeviceSpan>> staged_device(num_items);
  for (int i = 0; i < num_items; ++i) {
    const GpuKvCache& cache = *batch[i].cache;
    if (cache.compressor_ == nullptr) continue;
    for (int p = cache.num_compressed_tokens(); tail_len[i] - p >= cache.span_tokens_; p += cache.span_tokens_) {
      kvcache::Span span;
      ASSIGN_OR_RETURN(GpuKvCache::DeviceSpan device, cache.device_codec_ != nullptr
                                                          ? cache.EncodeSpanOnDevice(p, &span)
                                                          : cache.CompressSpan(p, &span));
      staged_spans[i].push_back(std::move(span));
      staged_device[i].push_back(std::move(device));
    }
  }
  // Everything ran: the caches take their tokens and spans.
  for (int i = 0; i < num_items; ++i) {
    const int rows = batch[i].logits_mode == model::LogitsMode::kAllTokens ? num_q[i] : 1;
    if (batch[i].logits != nullptr) {
      const int64_t begin = int64_t{logits_row[i] - first_row} * c.vocab_size;
      batch[i].logits->assign(logits.begin() + begin, logits.begin() + begin + int64_t{rows} * c.vocab_size);
    }
    if (batch[i].sample != nullptr) *batch[i].sample->token_out = tokens[logits_row[i]];
    GpuKvCache& cache = *batch[i].cache;
    RETURN_IF_ERROR(cache.DropDenseRows(static_cast<int>(staged_spans[i].size()) * cache.span_tokens_,
                                        tail_len[i] - cache.num_compressed_tokens()));
    for (size_t k = 0; k < staged_spans[i].size(); ++k) {
      cache.spans_.push_back(std::move(staged_spans[i][k]));
      cache.device_spans_.push_back(std::move(staged_device[i][k]));
    }
    cache.num_tokens_ = tail_len[i];
  }
  return absl::OkStatus();
}

}  // namespace kvspan::gpu
