// Block-wide reductions over one row, shared by the kernels that give a block to each row
// (elementwise_kernels.cuh's RMSNorm and argmax, sampling_kernels.cuh), written against
// cuda_compat.h. Device functions only: a header of kernels (KVSPAN_GLOBAL) can be
// included by one source each.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_ROW_REDUCTIONS_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_ROW_REDUCTIONS_CUH_

#include "kernels/cuda/internal/cuda_compat.h"

namespace kvspan::kernels::internal {

inline constexpr int kRowThreads = 256;  // one block per row: RMSNorm, argmax, sampling

// The block's sum of v, in every thread. REQUIRES: all kRowThreads threads call it.
KVSPAN_DEVICE float BlockSum(float v) {
  __shared__ float partial[kRowThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  KVSPAN_UNROLL
  for (int w = 0; w < kRowThreads / 32; ++w) total += partial[w];
  __syncthreads();  // the next call may overwrite partial
  return total;
}

// model::ArgMax's candidate over row[0, n): the index of the largest finite value, the
// lowest on ties; -1 when none is finite. Returned in every thread. REQUIRES: all
// kRowThreads threads of the block call it.
KVSPAN_DEVICE int BlockArgmax(const float* row, int n) {
  float best = -INFINITY;
  int best_id = -1;  // -1: no finite value seen
  for (int i = threadIdx.x; i < n; i += kRowThreads) {
    const float v = row[i];
    if (IsFiniteFloat(v) && (best_id < 0 || v > best)) {
      best = v;
      best_id = i;
    }
  }
  // Reduce (value, id) pairs: larger value wins, then the lower id; -1 loses to any id.
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int other_id = __shfl_xor_sync(0xffffffffu, best_id, offset);
    if (other_id >= 0 && (best_id < 0 || other > best || (other == best && other_id < best_id))) {
      best = other;
      best_id = other_id;
    }
  }
  __shared__ float warp_best[kRowThreads / 32];
  __shared__ int warp_id[kRowThreads / 32];
  __shared__ int block_id;
  if (threadIdx.x % 32 == 0) {
    warp_best[threadIdx.x / 32] = best;
    warp_id[threadIdx.x / 32] = best_id;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kRowThreads / 32; ++w) {
      if (warp_id[w] >= 0 && (best_id < 0 || warp_best[w] > best || (warp_best[w] == best && warp_id[w] < best_id))) {
        best = warp_best[w];
        best_id = warp_id[w];
      }
    }
    block_id = best_id;
  }
  __syncthreads();
  return block_id;
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_ROW_REDUCTIONS_CUH_
