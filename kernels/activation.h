// The SwiGLU gate of Llama-family MLPs: out = silu(gate) * up, silu(x) = x / (1 + e^-x).
// Thread-safe (pure function). `out` may equal `gate` (in place).
#ifndef KVSPAN_KERNELS_ACTIVATION_H_
#define KVSPAN_KERNELS_ACTIVATION_H_

#include <cstdint>

namespace kvspan::kernels {

struct SiluMulParams {
  const float* gate = nullptr;  // [num_rows, dim], row stride in_row_stride floats
  const float* up = nullptr;    // [num_rows, dim], row stride in_row_stride floats
  int64_t in_row_stride = 0;
  float* out = nullptr;         // [num_rows, dim], row stride out_row_stride floats
  int64_t out_row_stride = 0;
  int num_rows = 0;
  int dim = 0;
};

void SiluMul(const SiluMulParams& p);     // fp32
void SiluMulRef(const SiluMulParams& p);  // double precision reference

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_ACTIVATION_H_
