// Double-precision references for the small kernels (RMSNorm, RoPE, SiLU*mul): the
// specification their fp32 paths are tested against.
#include <cmath>

#include "kernels/activation.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"

namespace kvspan::kernels {

void RmsNormRef(const RmsNormParams& p) {
  for (int r = 0; r < p.num_rows; ++r) {
    const float* x = p.x + r * p.x_row_stride;
    float* out = p.out + r * p.out_row_stride;
    double sum = 0.0;
    for (int i = 0; i < p.dim; ++i) sum += static_cast<double>(x[i]) * x[i];
    const double inv_rms = 1.0 / std::sqrt(sum / p.dim + p.eps);
    for (int i = 0; i < p.dim; ++i) out[i] = static_cast<float>(p.weight[i] * (x[i] * inv_rms));
  }
}

void SiluMulRef(const SiluMulParams& p) {
  for (int r = 0; r < p.num_rows; ++r) {
    for (int i = 0; i < p.dim; ++i) {
      const double g = p.gate[r * p.in_row_stride + i];
      const double u = p.up[r * p.in_row_stride + i];
      p.out[r * p.out_row_stride + i] = static_cast<float>(g / (1.0 + std::exp(-g)) * u);
    }
  }
}

std::vector<double> RopeInvFreqRef(const RopeFrequencyOptions& o) {
  const int half = o.head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(o.theta, -2.0 * i / o.head_dim);
  if (!o.llama3_scaling) return inv_freq;
  const double low_freq_wavelen = o.original_max_position_embeddings / o.low_freq_factor;
  const double high_freq_wavelen = o.original_max_position_embeddings / o.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const double wavelen = 2.0 * M_PI / inv_freq[i];
    if (wavelen < high_freq_wavelen) continue;  // high frequency: unchanged
    if (wavelen > low_freq_wavelen) {           // low frequency: divided by factor
      inv_freq[i] /= o.factor;
      continue;
    }
    // Medium: interpolates between f / factor and f.
    const double smooth = (o.original_max_position_embeddings / wavelen - o.low_freq_factor) /
                          (o.high_freq_factor - o.low_freq_factor);
    inv_freq[i] = (1.0 - smooth) * inv_freq[i] / o.factor + smooth * inv_freq[i];
  }
  return inv_freq;
}

void ApplyRopeRef(const RopeParams& p, const int32_t* positions, const double* inv_freq) {
  const int half = p.head_dim / 2;
  for (int t = 0; t < p.num_tokens; ++t) {
    for (int h = 0; h < p.num_heads; ++h) {
      float* x = p.x + t * p.x_row_stride + h * p.head_dim;
      for (int i = 0; i < half; ++i) {
        const double angle = positions[t] * inv_freq[i];
        const double a = x[i];
        const double b = x[i + half];
        x[i] = static_cast<float>(a * std::cos(angle) - b * std::sin(angle));
        x[i + half] = static_cast<float>(b * std::cos(angle) + a * std::sin(angle));
      }
    }
  }
}

}  // namespace kvspan::kernels
