// The plain linear kernel of linear_cuda.h and the fp32 → bf16 conversion cuBLASLt's path
// uses, against cuda_compat.h (GPU and CPU emulator).
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_LINEAR_KERNELS_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_LINEAR_KERNELS_CUH_

#include <cstdint>

#include "kernels/cuda/internal/cuda_compat.h"
#include "kernels/cuda/linear_cuda.h"

namespace kvspan::kernels::internal {

inline constexpr int kLinearThreads = 256;
inline constexpr int kLinearRows = 8;  // rows of x per thread

inline LaunchShape LinearShape(const LinearCudaParams& p) {
  return {dim3((p.n + kLinearThreads - 1) / kLinearThreads, (p.m + kLinearRows - 1) / kLinearRows),
          dim3(kLinearThreads)};
}

// Thread j of the grid's x axis computes output column j for rows [8 y, 8 y + 8): one read
// of W's row j per 8 rows of x; x's elements are broadcast to the warp.
KVSPAN_GLOBAL(kLinearThreads) LinearKernel(LinearCudaParams p) {
  const int j = blockIdx.x * kLinearThreads + threadIdx.x;
  if (j >= p.n) return;
  const int row0 = blockIdx.y * kLinearRows;
  const int rows = p.m - row0 < kLinearRows ? p.m - row0 : kLinearRows;
  const uint16_t* w = p.w + int64_t{j} * p.k;
  const float* x = p.x + int64_t{row0} * p.x_row_stride;
  float acc[kLinearRows];
  KVSPAN_UNROLL
  for (int r = 0; r < kLinearRows; ++r) acc[r] = 0.0f;
  for (int c = 0; c < p.k; ++c) {
    const float wc = Bf16BitsToFloat(w[c]);
    KVSPAN_UNROLL
    for (int r = 0; r < kLinearRows; ++r) {
      if (r < rows) acc[r] = fmaf(x[r * p.x_row_stride + c], wc, acc[r]);
    }
  }
  const float bias = p.bias == nullptr ? 0.0f : p.bias[j];
  KVSPAN_UNROLL
  for (int r = 0; r < kLinearRows; ++r) {
    if (r >= rows) continue;
    float* y = p.y + int64_t{row0 + r} * p.y_row_stride + j;
    *y = p.beta == 0.0f ? acc[r] + bias : acc[r] + bias + p.beta * *y;
  }
}

struct ToBf16Params {
  const float* x = nullptr;  // [m, k], row stride x_row_stride
  int64_t x_row_stride = 0;
  uint16_t* out = nullptr;   // [m, k] contiguous
  int m = 0;
  int k = 0;
};

inline LaunchShape ToBf16Shape(const ToBf16Params& p) { return {dim3((p.k + 255) / 256, p.m), dim3(256)}; }

// Round to nearest even (FloatToBf16 of common/float16.h; finite inputs).
KVSPAN_GLOBAL(256) ToBf16Kernel(ToBf16Params p) {
  const int c = blockIdx.x * 256 + threadIdx.x;
  if (c >= p.k) return;
  p.out[int64_t{blockIdx.y} * p.k + c] = FloatToBf16Bits(p.x[blockIdx.y * p.x_row_stride + c]);
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_LINEAR_KERNELS_CUH_
