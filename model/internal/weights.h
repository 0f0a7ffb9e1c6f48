// The weights of a Llama-family model, fused for the forward pass, and their loader. The
// matrices are held in one format of kernels/weight_matrix.h (the checkpoint's dtype, or
// another one asked for at load: ModelOptions::weights); norms and biases stay fp32.
#ifndef KVSPAN_MODEL_INTERNAL_WEIGHTS_H_
#define KVSPAN_MODEL_INTERNAL_WEIGHTS_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "kernels/weight_allocator.h"
#include "kernels/weight_matrix.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace kvspan::model::internal {

using kernels::WeightAllocator;

using FloatBuffer = std::vector<float, WeightAllocator<float>>;

// One weight matrix in its in-memory format, owning its storage.
struct WeightBuffer {
  kernels::WeightFormat format = kernels::WeightFormat::kF32;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t, WeightAllocator<uint8_t>> data;  // [rows, cols] elements of `format` (kInt4: panels)
  std::vector<float> scales;                             // [rows] kInt8 only
  std::vector<int32_t> row_sums;                         // [rows] kInt8 only
  std::vector<uint16_t> group_scales;                    // [panels, groups, 4] kInt4 only
  int group_size = 0;                                    // kInt4 only

  // Sizes the storage (contents uninitialized). REQUIRES: rows, cols >= 1; for kInt4
  // group_size a positive multiple of 32.
  void Allocate(kernels::WeightFormat format, int64_t rows, int64_t cols, int group_size = 0);
  // The borrowed view the kernels take; valid while this buffer lives unchanged.
  kernels::WeightMatrix view() const;
  int64_t size_bytes() const { return view().size_bytes(); }
};

struct LayerWeights {
  FloatBuffer attn_norm;  // [hidden]
  // [(num_heads + 2 * num_kv_heads) * head_dim, hidden]: q_proj rows, then k_proj, v_proj.
  WeightBuffer qkv;
  FloatBuffer qkv_bias;   // [(num_heads + 2 * num_kv_heads) * head_dim]; empty without bias
  WeightBuffer o;         // [hidden, num_heads * head_dim]
  FloatBuffer mlp_norm;   // [hidden]
  WeightBuffer gate_up;   // [2 * intermediate, hidden]: gate_proj rows, then up_proj
  WeightBuffer down;      // [hidden, intermediate]
};

struct Weights {
  WeightBuffer embed;      // [vocab, hidden]
  std::vector<LayerWeights> layers;
  FloatBuffer final_norm;  // [hidden]
  WeightBuffer lm_head;    // [vocab, hidden]; empty (rows == 0) when tied to embed

  const WeightBuffer& output() const { return lm_head.rows == 0 ? embed : lm_head; }
};

// Reads every tensor the config calls for from `checkpoint`: matrices into `format`
// (copied when the tensor's dtype is that format, else converted: to kBF16 or kF16 by
// rounding to nearest even, to kInt8 by kernels::QuantizeRowsInt8 per row, to kInt4 by
// kernels::QuantizeRowsInt4 in groups of `group_size`), norms and biases into fp32; using
// `pool` (may be null) for the conversion. NotFound for a missing tensor; InvalidArgument
// for a wrong shape or a non-float dtype. REQUIRES: for kInt4, group_size a positive
// multiple of 32.
absl::StatusOr<Weights> LoadWeights(const SafetensorsCheckpoint& checkpoint, const ModelConfig& config,
                                    kernels::WeightFormat format, int group_size, ThreadPool* pool);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_WEIGHTS_H_
