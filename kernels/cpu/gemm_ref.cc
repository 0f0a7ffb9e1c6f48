// LinearRef: the specification of kernels::Linear (gemm.h), plain loops in double.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/float16.h"
#include "kernels/gemm.h"

namespace kvspan::kernels {

void LinearRef(const LinearParams& p) {
  const int n = p.w.rows, k = p.w.cols;
  std::vector<float> w_row(k);
  std::vector<int8_t> q(int64_t{p.m} * k);
  std::vector<float> x_scales(p.m);
  const bool quantized_x = p.w.format == WeightFormat::kInt8 || p.w.format == WeightFormat::kInt4;
  if (quantized_x) {
    for (int i = 0; i < p.m; ++i) {
      x_scales[i] = QuantizeRowInt8(p.x + int64_t{i} * k, k, q.data() + int64_t{i} * k);
    }
  }
  for (int j = 0; j < n; ++j) {
    DequantizeRow(p.w, j, w_row.data());
    const int8_t* codes = p.w.format == WeightFormat::kInt8 ? static_cast<const int8_t*>(p.w.data) + int64_t{j} * k
                                                             : nullptr;
    for (int i = 0; i < p.m; ++i) {
      double sum = 0.0;
      if (codes != nullptr) {
        int64_t dot = 0;
        for (int l = 0; l < k; ++l) dot += int64_t{q[int64_t{i} * k + l]} * codes[l];
        sum = static_cast<double>(x_scales[i]) * p.w.scales[j] * static_cast<double>(dot);
      } else if (p.w.format == WeightFormat::kInt4) {
        // s_x · Σ_g s_g · Σ_{l in g} q_l · code_l, each group's integer sum exact.
        for (int g = 0; g < p.w.num_groups(); ++g) {
          int64_t dot = 0;
          for (int l = g * p.w.group_size; l < std::min(k, (g + 1) * p.w.group_size); ++l) {
            dot += int64_t{q[int64_t{i} * k + l]} * Int4Code(p.w, j, l);
          }
          sum += static_cast<double>(HalfToFloat(p.w.group_scales[Int4ScaleIndex(p.w.num_groups(), j, g)])) *
                 static_cast<double>(dot);
        }
        sum *= x_scales[i];
      } else {
        for (int l = 0; l < k; ++l) sum += static_cast<double>(p.x[int64_t{i} * k + l]) * w_row[l];
      }
      if (p.bias != nullptr) sum += p.bias[j];
      float& y = p.y[int64_t{i} * n + j];
      y = static_cast<float>(sum + (p.beta != 0.0f ? static_cast<double>(p.beta) * y : 0.0));
    }
  }
}

}  // namespace kvspan::kernels
