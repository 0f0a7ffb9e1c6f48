#include <cmath>

#include "kernels/activation.h"

namespace kvspan::kernels {

void SiluMul(const SiluMulParams& p) {
  for (int r = 0; r < p.num_rows; ++r) {
    const float* gate = p.gate + r * p.in_row_stride;
    const float* up = p.up + r * p.in_row_stride;
    float* out = p.out + r * p.out_row_stride;
    for (int i = 0; i < p.dim; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

}  // namespace kvspan::kernels
