#include "model/internal/weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/float16.h"
#include "common/status_macros.h"

namespace kvspan::model::internal {

void WeightBuffer::Allocate(kernels::WeightFormat f, int64_t num_rows, int64_t num_cols, int int4_group_size) {
  format = f;
  rows = static_cast<int>(num_rows);
  cols = static_cast<int>(num_cols);
  data.resize(kernels::WeightDataBytes(f, num_rows, num_cols));
  if (f == kernels::WeightFormat::kInt8) {
    scales.resize(num_rows);
    row_sums.resize(num_rows);
  }
  if (f == kernels::WeightFormat::kInt4) {
    group_size = int4_group_size;
    group_scales.resize(kernels::Int4PaddedRows(num_rows) * view().num_groups());  // zeros
    // The padding rows of the last panel, which no tensor fills: zero, as the format says.
    const int64_t panel_bytes = kernels::WeightDataBytes(f, kernels::kInt4PanelRows, num_cols);
    std::fill(data.end() - panel_bytes, data.end(), uint8_t{0});
  }
}

kernels::WeightMatrix WeightBuffer::view() const {
  const bool int8 = format == kernels::WeightFormat::kInt8;
  const bool int4 = format == kernels::WeightFormat::kInt4;
  return {format, data.data(), int8 ? scales.data() : nullptr, int8 ? row_sums.data() : nullptr, rows, cols,
          int4 ? group_scales.data() : nullptr, int4 ? group_size : 0};
}

namespace {

// Where one tensor's values go: an fp32 vector (norms, biases) or rows of a matrix.
struct Destination {
  float* floats = nullptr;
  WeightBuffer* matrix = nullptr;
  int64_t first_row = 0;  // of `matrix`, where the tensor's row 0 goes
};

struct Job {
  std::string name;
  Destination dst;
  const TensorInfo* tensor = nullptr;
};

// Converts rows [0, num_rows) of the row-major `src` slice (num_rows × cols of src's dtype)
// into `dst` rows [first_row, first_row + num_rows), in dst's format.
absl::Status ConvertRows(const TensorInfo& src, int64_t num_rows, int64_t cols, WeightBuffer* dst, int64_t first_row) {
  using kernels::WeightFormat;
  const int64_t n = num_rows * cols;
  uint8_t* out = dst->data.data() + first_row * kernels::WeightRowBytes(dst->format, cols);  // not kInt4's
  const bool same = (dst->format == WeightFormat::kF32 && src.dtype == DType::kF32) ||
                    (dst->format == WeightFormat::kBF16 && src.dtype == DType::kBF16) ||
                    (dst->format == WeightFormat::kF16 && src.dtype == DType::kF16);
  if (same) {
    std::memcpy(out, src.data, src.size_bytes);
    return absl::OkStatus();
  }
  if (dst->format == WeightFormat::kF32) return ConvertToFloat(src, absl::MakeSpan(reinterpret_cast<float*>(out), n));
  std::vector<float> values(n);
  RETURN_IF_ERROR(ConvertToFloat(src, absl::MakeSpan(values)));
  switch (dst->format) {
    case WeightFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(out)[i] = FloatToBf16(values[i]);
      break;
    case WeightFormat::kF16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(out)[i] = FloatToHalf(values[i]);
      break;
    case WeightFormat::kInt8:
      kernels::QuantizeRowsInt8(values.data(), 0, num_rows, static_cast<int>(cols), reinterpret_cast<int8_t*>(out),
                                dst->scales.data() + first_row, dst->row_sums.data() + first_row);
      break;
    case WeightFormat::kInt4:
      // Rows of a panel may come from two tensors (q_proj, k_proj) or chunks: each call writes
      // only its own rows' bytes.
      kernels::QuantizeRowsInt4(values.data(), num_rows, static_cast<int>(cols), dst->group_size, first_row,
                                dst->data.data(), dst->group_scales.data());
      break;
    case WeightFormat::kF32:
      break;
  }
  return absl::OkStatus();
}

// Drops the whole pages of [data, data + size_bytes) from this process's resident set once
// a chunk has been copied out of the (read-only, pre-faulted) checkpoint mapping, so that
// the load never holds the file and its copy at once. Advisory: a page read again later
// faults back in from the file with the same bytes. Chunks never share a whole page.
void ReleaseSource(const uint8_t* data, int64_t size_bytes) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(size_bytes)) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

class JobList {
 public:
  explicit JobList(const SafetensorsCheckpoint& ckpt) : ckpt_(ckpt) {}

  // Checks presence, dtype and shape of `name` and queues its conversion into dst.
  absl::Status Add(const std::string& name, const std::vector<int64_t>& shape, Destination dst) {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt_.Get(name));
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, " has dtype ", DTypeName(t->dtype), ", expected F32, F16 or BF16"));
    }
    if (t->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", t->ShapeString(),
                                                     ", expected [", absl::StrJoin(shape, ", "), "]"));
    }
    jobs_.push_back({name, dst, t});
    return absl::OkStatus();
  }
  absl::Status AddVector(const std::string& name, int64_t size, float* dst) {
    return Add(name, {size}, {.floats = dst});
  }
  absl::Status AddMatrix(const std::string& name, int64_t rows, WeightBuffer* dst, int64_t first_row) {
    return Add(name, {rows, dst->cols}, {.matrix = dst, .first_row = first_row});
  }

  // Converts every queued tensor, split into chunks of whole rows so that one large
  // tensor (the embedding) spreads over the pool too.
  absl::Status Run(ThreadPool* pool) {
    constexpr int64_t kChunkElements = int64_t{1} << 22;
    struct Chunk {
      TensorInfo view;  // a slice of whole rows of a queued tensor
      Destination dst;
      int64_t num_rows = 0;
      int64_t cols = 0;
    };
    std::vector<Chunk> chunks;
    for (const Job& job : jobs_) {
      const TensorInfo& t = *job.tensor;
      const int size = DTypeSizeBytes(t.dtype);
      const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
      const int64_t rows = t.num_elements() / cols;
      const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / cols);
      for (int64_t begin = 0; begin < rows; begin += rows_per_chunk) {
        const int64_t len = std::min(rows_per_chunk, rows - begin);
        Chunk c{{job.name, t.dtype, {len * cols}, t.data + begin * cols * size, len * cols * size}, job.dst, len, cols};
        if (c.dst.floats != nullptr) c.dst.floats += begin * cols;
        c.dst.first_row += begin;
        chunks.push_back(std::move(c));
      }
    }
    std::mutex mu;
    absl::Status first_error;
    auto run = [&](int64_t i) {
      const Chunk& c = chunks[i];
      absl::Status s = c.dst.floats != nullptr
                           ? ConvertToFloat(c.view, absl::MakeSpan(c.dst.floats, c.view.num_elements()))
                           : ConvertRows(c.view, c.num_rows, c.cols, c.dst.matrix, c.dst.first_row);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = s;
      }
      ReleaseSource(c.view.data, c.view.size_bytes);
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

absl::StatusOr<Weights> LoadWeights(const SafetensorsCheckpoint& ckpt, const ModelConfig& c,
                                    kernels::WeightFormat format, int group_size, ThreadPool* pool) {
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, hd = c.head_dim;
  const int64_t q_rows = c.num_heads * hd, kv_rows = c.num_kv_heads * hd;
  const int64_t qkv_rows = q_rows + 2 * kv_rows;
  Weights w;
  JobList jobs(ckpt);
  w.embed.Allocate(format, c.vocab_size, hidden, group_size);
  RETURN_IF_ERROR(jobs.AddMatrix("model.embed_tokens.weight", c.vocab_size, &w.embed, 0));
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    lw.attn_norm.resize(hidden);
    lw.qkv.Allocate(format, qkv_rows, hidden, group_size);
    lw.o.Allocate(format, hidden, q_rows, group_size);
    lw.mlp_norm.resize(hidden);
    lw.gate_up.Allocate(format, 2 * inter, hidden, group_size);
    lw.down.Allocate(format, hidden, inter, group_size);
    RETURN_IF_ERROR(jobs.AddVector(p + "input_layernorm.weight", hidden, lw.attn_norm.data()));
    RETURN_IF_ERROR(jobs.AddMatrix(p + "self_attn.q_proj.weight", q_rows, &lw.qkv, 0));
    RETURN_IF_ERROR(jobs.AddMatrix(p + "self_attn.k_proj.weight", kv_rows, &lw.qkv, q_rows));
    RETURN_IF_ERROR(jobs.AddMatrix(p + "self_attn.v_proj.weight", kv_rows, &lw.qkv, q_rows + kv_rows));
    if (c.qkv_bias) {
      lw.qkv_bias.resize(qkv_rows);
      RETURN_IF_ERROR(jobs.AddVector(p + "self_attn.q_proj.bias", q_rows, lw.qkv_bias.data()));
      RETURN_IF_ERROR(jobs.AddVector(p + "self_attn.k_proj.bias", kv_rows, lw.qkv_bias.data() + q_rows));
      RETURN_IF_ERROR(jobs.AddVector(p + "self_attn.v_proj.bias", kv_rows, lw.qkv_bias.data() + q_rows + kv_rows));
    }
    RETURN_IF_ERROR(jobs.AddMatrix(p + "self_attn.o_proj.weight", hidden, &lw.o, 0));
    RETURN_IF_ERROR(jobs.AddVector(p + "post_attention_layernorm.weight", hidden, lw.mlp_norm.data()));
    RETURN_IF_ERROR(jobs.AddMatrix(p + "mlp.gate_proj.weight", inter, &lw.gate_up, 0));
    RETURN_IF_ERROR(jobs.AddMatrix(p + "mlp.up_proj.weight", inter, &lw.gate_up, inter));
    RETURN_IF_ERROR(jobs.AddMatrix(p + "mlp.down_proj.weight", hidden, &lw.down, 0));
  }
  w.final_norm.resize(hidden);
  RETURN_IF_ERROR(jobs.AddVector("model.norm.weight", hidden, w.final_norm.data()));
  if (!c.tie_word_embeddings) {
    w.lm_head.Allocate(format, c.vocab_size, hidden, group_size);
    RETURN_IF_ERROR(jobs.AddMatrix("lm_head.weight", c.vocab_size, &w.lm_head, 0));
  }
  RETURN_IF_ERROR(jobs.Run(pool));
  return w;
}

}  // namespace kvspan::model::internal
