// Linear layers on the GPU: y = x · Wᵀ + bias + beta · y with W [n, k] bf16 (the layout of
// kernels/gemm.h; the GPU keeps weights in bf16, uploaded once) and fp32 activations.
//
// Two paths:
//   LinearCuda         kvspan's plain kernel: one thread per output column over 8 rows of
//                      x, fp32 x times exactly converted bf16 W, fp32 accumulation in k
//                      order: LinearRef's exact-path bound, |y - ref| <= (k + 2) · 2^-24 ·
//                      (Σ|x·w| + |bias| + |beta·y0|). The reference GPU path, the one the
//                      CPU emulator runs, and the fallback where cuBLASLt is not available.
//   CublasLtLinear     cuBLASLt (CUDA builds only): x rounded to bf16 by a kernel, bf16 ×
//                      bf16 products accumulated in fp32 on the tensor cores, bias by the
//                      epilogue: |y - ref| <= 2^-8 · Σ|x·w| + the fp32 bound, the bound of
//                      the CPU's avx512-bf16dot path (gemm.h).
// This header never includes CUDA headers (STYLE.md).
#ifndef KVSPAN_KERNELS_CUDA_LINEAR_CUDA_H_
#define KVSPAN_KERNELS_CUDA_LINEAR_CUDA_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device_memory.h"

namespace kvspan::kernels {

struct LinearCudaParams {
  const float* x = nullptr;     // device [m, k] fp32, row stride x_row_stride floats
  int64_t x_row_stride = 0;
  const uint16_t* w = nullptr;  // device [n, k] bf16 bits, row-major, contiguous rows
  const float* bias = nullptr;  // device [n] or null
  float* y = nullptr;           // device [m, n] fp32, row stride y_row_stride floats; no alias of x
  int64_t y_row_stride = 0;
  int m = 0;  // >= 0
  int n = 0;  // >= 1
  int k = 0;  // >= 1
  float beta = 0.0f;  // 0: y = x·Wᵀ (+ bias); 1: y += x·Wᵀ (+ bias) (residuals)
};

// The plain kernel, enqueued on `stream`. InvalidArgument for shapes out of range or null
// pointers; Unavailable without a device; Internal for a launch error.
absl::Status LinearCuda(const LinearCudaParams& p, void* stream);

// cuBLASLt's bf16 GEMM with its handle and scratch (the bf16 copy of x, the workspace).
// Not thread-safe: one caller and stream at a time.
class CublasLtLinear {
 public:
  // Unimplemented where kvspan was built without cuBLASLt (the CPU emulator's builds);
  // Unavailable without a device; Internal for a cuBLASLt error.
  static absl::StatusOr<std::unique_ptr<CublasLtLinear>> Create();
  ~CublasLtLinear();
  CublasLtLinear(const CublasLtLinear&) = delete;
  CublasLtLinear& operator=(const CublasLtLinear&) = delete;

  // Enqueues the product on `stream`. Errors as LinearCuda, and Internal for cuBLASLt's.
  absl::Status Run(const LinearCudaParams& p, void* stream);

 private:
  CublasLtLinear() = default;
  void* handle_ = nullptr;  // cublasLtHandle_t
  DeviceBuffer x_bf16_;
  DeviceBuffer workspace_;
};

namespace internal {
// InvalidArgument unless `p` meets LinearCudaParams' invariants.
absl::Status ValidateLinearCuda(const LinearCudaParams& p);
}  // namespace internal

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_LINEAR_CUDA_H_
