#include "kernels/gemm.h"

#include <cblas.h>

namespace kvspan::kernels {

void Linear(const LinearParams& p) {
  if (p.m == 1) {
    // GEMV: y[n] = W[n, k] · x[k]. OpenBLAS' sgemm with m == 1 is slower than sgemv.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, p.n, p.k, 1.0f, p.w, p.k, p.x, 1, p.beta, p.y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, p.n, p.k, 1.0f, p.x, p.k, p.w, p.k,
                p.beta, p.y, p.n);
  }
  if (p.bias != nullptr) {
    for (int i = 0; i < p.m; ++i) {
      float* row = p.y + static_cast<int64_t>(i) * p.n;
      for (int j = 0; j < p.n; ++j) row[j] += p.bias[j];
    }
  }
}

void LinearRef(const LinearParams& p) {
  for (int i = 0; i < p.m; ++i) {
    for (int j = 0; j < p.n; ++j) {
      double sum = 0.0;
      for (int l = 0; l < p.k; ++l) {
        sum += static_cast<double>(p.x[static_cast<int64_t>(i) * p.k + l]) *
               p.w[static_cast<int64_t>(j) * p.k + l];
      }
      if (p.bias != nullptr) sum += p.bias[j];
      float& y = p.y[static_cast<int64_t>(i) * p.n + j];
      y = static_cast<float>(sum + (p.beta != 0.0f ? static_cast<double>(p.beta) * y : 0.0));
    }
  }
}

void SetBlasThreads(int num_threads) { openblas_set_num_threads(num_threads); }

}  // namespace kvspan::kernels
