#include <cmath>

#include "kernels/rope.h"

namespace kvspan::kernels {

std::vector<float> RopeInvFreq(const RopeFrequencyOptions& o) {
  const int half = o.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    // transformers: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(o.head_dim);
    const float power = static_cast<float>(std::pow(static_cast<double>(static_cast<float>(o.theta)),
                                                    static_cast<double>(exponent)));
    inv_freq[i] = 1.0f / power;
  }
  if (!o.llama3_scaling) return inv_freq;
  // _compute_llama3_parameters, with its tensor arithmetic in fp32.
  const float factor = static_cast<float>(o.factor);
  const float low = static_cast<float>(o.low_freq_factor);
  const float old_len = static_cast<float>(o.original_max_position_embeddings);
  const float low_freq_wavelen = static_cast<float>(o.original_max_position_embeddings / o.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(o.original_max_position_embeddings / o.high_freq_factor);
  const float two_pi = static_cast<float>(2.0 * M_PI);
  const float high_minus_low = static_cast<float>(o.high_freq_factor - o.low_freq_factor);
  for (int i = 0; i < half; ++i) {
    const float f = inv_freq[i];
    const float wavelen = two_pi / f;
    float scaled = wavelen > low_freq_wavelen ? f / factor : f;
    const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (is_medium) {
      const float smooth = (old_len / wavelen - low) / high_minus_low;
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    inv_freq[i] = scaled;
  }
  return inv_freq;
}

void RopeCosSin(const int32_t* positions, int num_tokens, const float* inv_freq, int half,
                float* cos, float* sin) {
  for (int t = 0; t < num_tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int i = 0; i < half; ++i) {
      // fp32 product as in transformers (inv_freq @ position_ids in fp32); cos/sin of it.
      const float angle = pos * inv_freq[i];
      cos[t * half + i] = std::cos(angle);
      sin[t * half + i] = std::sin(angle);
    }
  }
}

void ApplyRope(const RopeParams& p) {
  const int half = p.head_dim / 2;
  for (int t = 0; t < p.num_tokens; ++t) {
    const float* c = p.cos + t * half;
    const float* s = p.sin + t * half;
    for (int h = 0; h < p.num_heads; ++h) {
      float* x = p.x + t * p.x_row_stride + h * p.head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = x[i];
        const float b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace kvspan::kernels
