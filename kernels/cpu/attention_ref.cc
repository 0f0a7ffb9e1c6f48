// The specification of kernels::Attention: plain loops, double precision, no tiling.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"

namespace kvspan::kernels {

void AttentionRef(const AttentionParams& p) {
  const int group = p.num_heads / p.num_kv_heads;
  std::vector<double> scores(p.num_keys);
  std::vector<double> acc(p.head_dim);
  for (int j = 0; j < p.num_q; ++j) {
    const int pos = p.q_start + j;
    const int first = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
    for (int h = 0; h < p.num_heads; ++h) {
      const int g = h / group;
      const float* q = p.q + j * p.q_row_stride + h * p.head_dim;
      double max_score = -INFINITY;
      for (int t = first; t <= pos; ++t) {
        const float* k = p.k + g * p.k_head_stride + t * p.k_token_stride;
        double dot = 0.0;
        for (int d = 0; d < p.head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
        scores[t] = dot * p.scale;
        max_score = std::max(max_score, scores[t]);
      }
      double sum = 0.0;
      for (int t = first; t <= pos; ++t) {
        scores[t] = std::exp(scores[t] - max_score);
        sum += scores[t];
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int t = first; t <= pos; ++t) {
        const float* v = p.v + g * p.v_head_stride + t * p.v_token_stride;
        for (int d = 0; d < p.head_dim; ++d) acc[d] += scores[t] / sum * v[d];
      }
      float* out = p.out + j * p.out_row_stride + h * p.head_dim;
      for (int d = 0; d < p.head_dim; ++d) out[d] = static_cast<float>(acc[d]);
    }
  }
}

}  // namespace kvspan::kernels
