#include "model/internal/weights.h"

#include <algorithm>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace kvspan::model::internal {
namespace {

// One tensor to read: where its fp32 values go.
struct Job {
  std::string name;
  std::vector<int64_t> shape;
  float* dst = nullptr;
  const TensorInfo* tensor = nullptr;
};

class JobList {
 public:
  explicit JobList(const SafetensorsCheckpoint& ckpt) : ckpt_(ckpt) {}

  // Checks presence, dtype and shape of `name` and queues its conversion into dst.
  absl::Status Add(const std::string& name, std::vector<int64_t> shape, float* dst) {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt_.Get(name));
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, " has dtype ", DTypeName(t->dtype), ", expected F32, F16 or BF16"));
    }
    if (t->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", t->ShapeString(),
                                                     ", expected [", absl::StrJoin(shape, ", "), "]"));
    }
    jobs_.push_back({name, std::move(shape), dst, t});
    return absl::OkStatus();
  }

  // Converts every queued tensor, split into chunks so that one large tensor (the
  // embedding) spreads over the pool too.
  absl::Status Run(ThreadPool* pool) {
    constexpr int64_t kChunkElements = int64_t{1} << 22;
    struct Chunk {
      TensorInfo view;  // a 1-D slice of a queued tensor
      float* dst;
    };
    std::vector<Chunk> chunks;
    for (const Job& job : jobs_) {
      const int64_t n = job.tensor->num_elements();
      const int size = DTypeSizeBytes(job.tensor->dtype);
      for (int64_t begin = 0; begin < n; begin += kChunkElements) {
        const int64_t len = std::min(kChunkElements, n - begin);
        Chunk c{{job.name, job.tensor->dtype, {len}, job.tensor->data + begin * size, len * size}, job.dst + begin};
        chunks.push_back(std::move(c));
      }
    }
    std::mutex mu;
    absl::Status first_error;
    auto run = [&](int64_t i) {
      const Chunk& chunk = chunks[i];
      absl::Status s = ConvertToFloat(chunk.view, absl::MakeSpan(chunk.dst, chunk.view.num_elements()));
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = s;
      }
    };
    if (pool != nullptr) {
      pool->ParallelFor(static_cast<int64_t>(chunks.size()), run);
    } else {
      for (size_t i = 0; i < chunks.size(); ++i) run(i);
    }
    return first_error;
  }

 private:
  const SafetensorsCheckpoint& ckpt_;
  std::vector<Job> jobs_;
};

}  // namespace

absl::StatusOr<Weights> LoadWeights(const SafetensorsCheckpoint& ckpt, const ModelConfig& c, ThreadPool* pool) {
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, hd = c.head_dim;
  const int64_t q_rows = c.num_heads * hd, kv_rows = c.num_kv_heads * hd;
  const int64_t qkv_rows = q_rows + 2 * kv_rows;
  Weights w;
  JobList jobs(ckpt);
  w.embed.resize(int64_t{c.vocab_size} * hidden);
  RETURN_IF_ERROR(jobs.Add("model.embed_tokens.weight", {c.vocab_size, hidden}, w.embed.data()));
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    lw.attn_norm.resize(hidden);
    lw.qkv.resize(qkv_rows * hidden);
    lw.o.resize(hidden * q_rows);
    lw.mlp_norm.resize(hidden);
    lw.gate_up.resize(2 * inter * hidden);
    lw.down.resize(hidden * inter);
    RETURN_IF_ERROR(jobs.Add(p + "input_layernorm.weight", {hidden}, lw.attn_norm.data()));
    RETURN_IF_ERROR(jobs.Add(p + "self_attn.q_proj.weight", {q_rows, hidden}, lw.qkv.data()));
    RETURN_IF_ERROR(jobs.Add(p + "self_attn.k_proj.weight", {kv_rows, hidden}, lw.qkv.data() + q_rows * hidden));
    RETURN_IF_ERROR(jobs.Add(p + "self_attn.v_proj.weight", {kv_rows, hidden},
                             lw.qkv.data() + (q_rows + kv_rows) * hidden));
    if (c.qkv_bias) {
      lw.qkv_bias.resize(qkv_rows);
      RETURN_IF_ERROR(jobs.Add(p + "self_attn.q_proj.bias", {q_rows}, lw.qkv_bias.data()));
      RETURN_IF_ERROR(jobs.Add(p + "self_attn.k_proj.bias", {kv_rows}, lw.qkv_bias.data() + q_rows));
      RETURN_IF_ERROR(jobs.Add(p + "self_attn.v_proj.bias", {kv_rows}, lw.qkv_bias.data() + q_rows + kv_rows));
    }
    RETURN_IF_ERROR(jobs.Add(p + "self_attn.o_proj.weight", {hidden, q_rows}, lw.o.data()));
    RETURN_IF_ERROR(jobs.Add(p + "post_attention_layernorm.weight", {hidden}, lw.mlp_norm.data()));
    RETURN_IF_ERROR(jobs.Add(p + "mlp.gate_proj.weight", {inter, hidden}, lw.gate_up.data()));
    RETURN_IF_ERROR(jobs.Add(p + "mlp.up_proj.weight", {inter, hidden}, lw.gate_up.data() + inter * hidden));
    RETURN_IF_ERROR(jobs.Add(p + "mlp.down_proj.weight", {hidden, inter}, lw.down.data()));
  }
  w.final_norm.resize(hidden);
  RETURN_IF_ERROR(jobs.Add("model.norm.weight", {hidden}, w.final_norm.data()));
  if (!c.tie_word_embeddings) {
    w.lm_head.resize(int64_t{c.vocab_size} * hidden);
    RETURN_IF_ERROR(jobs.Add("lm_head.weight", {c.vocab_size, hidden}, w.lm_head.data()));
  }
  RETURN_IF_ERROR(jobs.Run(pool));
  return w;
}

}  // namespace kvspan::model::internal
