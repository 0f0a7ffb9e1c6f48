#include <cmath>

#include "kernels/cpu/vec.h"
#include "kernels/rms_norm.h"

namespace kvspan::kernels {

void RmsNorm(const RmsNormParams& p) {
  for (int r = 0; r < p.num_rows; ++r) {
    const float* x = p.x + r * p.x_row_stride;
    float* out = p.out + r * p.out_row_stride;
    const float mean_square = internal::Dot(x, x, p.dim) / static_cast<float>(p.dim);
    const float inv_rms = 1.0f / std::sqrt(mean_square + p.eps);
    for (int i = 0; i < p.dim; ++i) out[i] = p.weight[i] * (x[i] * inv_rms);
  }
}

}  // namespace kvspan::kernels
