// Matrix products through OpenBLAS, in the layout of linear layers: weights are
// [out_features, in_features] row-major (as in safetensors checkpoints), so y = x · Wᵀ.
// Thread-safe (OpenBLAS 0.3.21 serializes its own thread pool between callers).
#ifndef KVSPAN_KERNELS_GEMM_H_
#define KVSPAN_KERNELS_GEMM_H_

#include <cstdint>

namespace kvspan::kernels {

struct LinearParams {
  const float* x = nullptr;     // [m, k] row-major, contiguous rows
  const float* w = nullptr;     // [n, k] row-major, contiguous rows
  const float* bias = nullptr;  // [n] added to every row of y; null = none
  float* y = nullptr;           // [m, n] row-major, contiguous rows
  int m = 0;                    // rows of x (stacked tokens), >= 1
  int n = 0;                    // out features, >= 1
  int k = 0;                    // in features, >= 1
  // 0: y = x·Wᵀ (+ bias). 1: y += x·Wᵀ (+ bias), used for residual connections.
  float beta = 0.0f;
};

// y = x · Wᵀ + bias + beta * y. Uses cblas_sgemv when m == 1 (decode) and cblas_sgemm
// otherwise. REQUIRES: the shapes above; y does not alias x or w.
void Linear(const LinearParams& p);

// Plain-loop reference in double precision, for tests.
void LinearRef(const LinearParams& p);

// Sets the number of threads OpenBLAS uses in all later calls (process-wide).
// REQUIRES: num_threads >= 1.
void SetBlasThreads(int num_threads);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_GEMM_H_
