// RMSNorm as in HF transformers' LlamaRMSNorm (fp32):
//   out[i, :] = weight * (x[i, :] / sqrt(mean(x[i, :]^2) + eps))
// Thread-safe (pure function). `out` may equal `x` (in place).
#ifndef KVSPAN_KERNELS_RMS_NORM_H_
#define KVSPAN_KERNELS_RMS_NORM_H_

#include <cstdint>

namespace kvspan::kernels {

struct RmsNormParams {
  const float* x = nullptr;       // [num_rows, dim], row stride x_row_stride floats
  int64_t x_row_stride = 0;
  const float* weight = nullptr;  // [dim]
  float* out = nullptr;           // [num_rows, dim], row stride out_row_stride floats
  int64_t out_row_stride = 0;
  int num_rows = 0;
  int dim = 0;
  float eps = 1e-6f;
};

void RmsNorm(const RmsNormParams& p);     // fp32, vectorized
void RmsNormRef(const RmsNormParams& p);  // double precision reference

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_RMS_NORM_H_
