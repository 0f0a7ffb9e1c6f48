#include "kernels/cuda/linear_cuda.h"

#include "common/status_macros.h"
#include "kernels/cuda/internal/linear_kernels.cuh"

#if !KVSPAN_EMULATED
#include <cublasLt.h>
#endif

#include "absl/strings/str_cat.h"

namespace kvspan::kernels {

namespace internal {
absl::Status ValidateLinearCuda(const LinearCudaParams& p) {
  if (p.m < 0 || p.n < 1 || p.k < 1 || p.x_row_stride < p.k || p.y_row_stride < p.n ||
      (p.m > 0 && (p.x == nullptr || p.w == nullptr || p.y == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("LinearCuda: shape out of range or null pointer (m ", p.m, ", n ",
                                                   p.n, ", k ", p.k, ")"));
  }
  return absl::OkStatus();
}
}  // namespace internal

absl::Status LinearCuda(const LinearCudaParams& p, void* stream) {
  RETURN_IF_ERROR(internal::ValidateLinearCuda(p));
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  if (p.m == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::LinearShape(p);
  KVSPAN_LAUNCH(internal::LinearKernel, s, stream, p);
  return internal::KvspanLaunchStatus("LinearCuda launch");
}

#if KVSPAN_EMULATED

absl::StatusOr<std::unique_ptr<CublasLtLinear>> CublasLtLinear::Create() {
  return absl::UnimplementedError("cuBLASLt is not part of the CPU emulator's build");
}
CublasLtLinear::~CublasLtLinear() = default;
absl::Status CublasLtLinear::Run(const LinearCudaParams&, void*) {
  return absl::UnimplementedError("cuBLASLt is not part of the CPU emulator's build");
}

#else

namespace {

constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": status ", static_cast<int>(s)));
}

// Destroys the descriptors of one Run on every path.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescriptors() {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<CublasLtLinear>> CublasLtLinear::Create() {
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  std::unique_ptr<CublasLtLinear> lt(new CublasLtLinear());
  cublasLtHandle_t handle = nullptr;
  RETURN_IF_ERROR(LtStatus(cublasLtCreate(&handle), "create"));
  lt->handle_ = handle;
  RETURN_IF_ERROR(lt->workspace_.Reserve(kWorkspaceBytes));
  return lt;
}

CublasLtLinear::~CublasLtLinear() {
  if (handle_ != nullptr) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

// Column-major view of the row-major product: y^T [n x m] = W [n x k] · x^T [k x m], i.e.
// D = op(A) · B with A = W stored k x n (lda k, transposed), B = bf16 x stored k x m (ldb k),
// C = D = y stored n x m (ld y_row_stride); the bias (length n, one per row of D) by the
// epilogue.
absl::Status CublasLtLinear::Run(const LinearCudaParams& p, void* stream) {
  RETURN_IF_ERROR(internal::ValidateLinearCuda(p));
  if (p.m == 0) return absl::OkStatus();
  RETURN_IF_ERROR(x_bf16_.Reserve(int64_t{p.m} * p.k * 2));
  internal::ToBf16Params conv{p.x, p.x_row_stride, x_bf16_.as<uint16_t>(), p.m, p.k};
  const internal::LaunchShape s = internal::ToBf16Shape(conv);
  KVSPAN_LAUNCH(internal::ToBf16Kernel, s, stream, conv);
  RETURN_IF_ERROR(internal::KvspanLaunchStatus("ToBf16 launch"));

  LtDescriptors d;
  RETURN_IF_ERROR(LtStatus(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc"));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  RETURN_IF_ERROR(LtStatus(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)), "transa"));
  RETURN_IF_ERROR(LtStatus(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)), "transb"));
  if (p.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    RETURN_IF_ERROR(LtStatus(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)), "epilogue"));
    const void* bias = p.bias;
    RETURN_IF_ERROR(LtStatus(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias"));
  }
  RETURN_IF_ERROR(LtStatus(cublasLtMatrixLayoutCreate(&d.a, CUDA_R_16BF, p.k, p.n, p.k), "layout a"));
  RETURN_IF_ERROR(LtStatus(cublasLtMatrixLayoutCreate(&d.b, CUDA_R_16BF, p.k, p.m, p.k), "layout b"));
  RETURN_IF_ERROR(LtStatus(cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32F, p.n, p.m, p.y_row_stride), "layout c"));
  RETURN_IF_ERROR(LtStatus(cublasLtMatmulPreferenceCreate(&d.pref), "preference"));
  const uint64_t workspace = static_cast<uint64_t>(workspace_.size_bytes());
  RETURN_IF_ERROR(LtStatus(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                &workspace, sizeof(workspace)),
                           "workspace"));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  RETURN_IF_ERROR(LtStatus(cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), d.op, d.a, d.b, d.c,
                                                          d.c, d.pref, 1, &heuristic, &found),
                           "heuristic"));
  if (found == 0) return absl::InternalError("cuBLASLt: no algorithm for this shape");
  const float alpha = 1.0f, beta = p.beta;
  return LtStatus(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), d.op, &alpha, p.w, d.a, x_bf16_.data(), d.b,
                                 &beta, p.y, d.c, p.y, d.c, &heuristic.algo, workspace_.data(), workspace,
                                 static_cast<cudaStream_t>(stream)),
                  "matmul");
}

#endif  // KVSPAN_EMULATED

}  // namespace kvspan::kernels
