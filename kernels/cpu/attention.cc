// Fast fp32 attention: one task per (query head, block of queries); each query runs an
// online softmax over tiles of keys (the flash-attention recurrence), accumulating
// straight into its output row, so no scratch memory is allocated.
#include <algorithm>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cpu/vec.h"

namespace kvspan::kernels {
namespace {

constexpr int kKeyTile = 64;
constexpr int kQueryBlock = 8;

// Attention of query j, head h. Accumulates into `out` (head_dim floats).
void AttendOne(const AttentionParams& p, int j, int h) {
  const int group = p.num_heads / p.num_kv_heads;
  const int g = h / group;
  const int pos = p.q_start + j;
  const int first = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
  const float* q = p.q + j * p.q_row_stride + h * p.head_dim;
  const float* k_head = p.k + g * p.k_head_stride;
  const float* v_head = p.v + g * p.v_head_stride;
  float* out = p.out + j * p.out_row_stride + h * p.head_dim;
  std::fill(out, out + p.head_dim, 0.0f);

  float scores[kKeyTile];
  float running_max = -INFINITY;
  float running_sum = 0.0f;
  for (int tile = first; tile <= pos; tile += kKeyTile) {
    const int n = std::min(kKeyTile, pos + 1 - tile);
    float tile_max = -INFINITY;
    for (int i = 0; i < n; ++i) {
      scores[i] = internal::Dot(q, k_head + (tile + i) * p.k_token_stride, p.head_dim) * p.scale;
      tile_max = std::max(tile_max, scores[i]);
    }
    const float new_max = std::max(running_max, tile_max);
    // exp(-inf) == 0 on the first tile: the empty accumulator is scaled by 0.
    const float correction = std::exp(running_max - new_max);
    running_sum *= correction;
    for (int i = 0; i < n; ++i) {
      const float w = std::exp(scores[i] - new_max);
      running_sum += w;
      const float* v = v_head + (tile + i) * p.v_token_stride;
      if (i == 0) {
        internal::ScaleAndAxpy(correction, w, v, out, p.head_dim);
      } else {
        internal::Axpy(w, v, out, p.head_dim);
      }
    }
    running_max = new_max;
  }
  internal::Scale(1.0f / running_sum, out, p.head_dim);
}

}  // namespace

void Attention(const AttentionParams& p, ThreadPool* pool) {
  const int num_blocks = (p.num_q + kQueryBlock - 1) / kQueryBlock;
  const int64_t num_tasks = static_cast<int64_t>(p.num_heads) * num_blocks;
  auto task = [&p, num_blocks](int64_t t) {
    const int h = static_cast<int>(t / num_blocks);
    const int block = static_cast<int>(t % num_blocks);
    const int end = std::min(p.num_q, (block + 1) * kQueryBlock);
    for (int j = block * kQueryBlock; j < end; ++j) AttendOne(p, j, h);
  };
  if (pool == nullptr) {
    for (int64_t t = 0; t < num_tasks; ++t) task(t);
  } else {
    pool->ParallelFor(num_tasks, task);
  }
}

}  // namespace kvspan::kernels
