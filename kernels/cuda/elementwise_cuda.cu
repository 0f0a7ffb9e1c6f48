#include "kernels/cuda/elementwise_cuda.h"

#include <cmath>

#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/internal/elementwise_kernels.cuh"

namespace kvspan::kernels {
namespace {

absl::Status Check(bool ok, const char* what) {
  if (!ok) return absl::InvalidArgumentError(what);
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  return absl::OkStatus();
}

absl::Status Launched(const char* what) { return internal::KvspanLaunchStatus(what); }

}  // namespace

absl::Status RmsNormCuda(const RmsNormParams& p, void* stream) {
  RETURN_IF_ERROR(Check(p.num_rows >= 0 && p.dim >= 1 && p.x_row_stride >= p.dim && p.out_row_stride >= p.dim &&
                            (p.num_rows == 0 || (p.x != nullptr && p.weight != nullptr && p.out != nullptr)),
                        "RmsNormCuda: shape out of range or null pointer"));
  if (p.num_rows == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::RmsNormShape(p);
  KVSPAN_LAUNCH(internal::RmsNormKernel, s, stream, p);
  return Launched("RmsNormCuda launch");
}

absl::Status SiluMulCuda(const SiluMulParams& p, void* stream) {
  RETURN_IF_ERROR(Check(p.num_rows >= 0 && p.dim >= 1 && p.in_row_stride >= p.dim && p.out_row_stride >= p.dim &&
                            (p.num_rows == 0 || (p.gate != nullptr && p.up != nullptr && p.out != nullptr)),
                        "SiluMulCuda: shape out of range or null pointer"));
  if (p.num_rows == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::SiluMulShape(p);
  KVSPAN_LAUNCH(internal::SiluMulKernel, s, stream, p);
  return Launched("SiluMulCuda launch");
}

absl::Status RopeCuda(const RopeCudaParams& p, void* stream) {
  RETURN_IF_ERROR(Check(p.num_tokens >= 0 && p.num_heads >= 1 && p.head_dim >= 2 && p.head_dim % 2 == 0 &&
                            p.x_row_stride >= int64_t{p.num_heads} * p.head_dim &&
                            (p.num_tokens == 0 || (p.x != nullptr && p.positions != nullptr && p.inv_freq != nullptr)),
                        "RopeCuda: shape out of range or null pointer"));
  if (p.num_tokens == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::RopeShape(p);
  KVSPAN_LAUNCH(internal::RopeKernel, s, stream, p);
  return Launched("RopeCuda launch");
}

absl::Status EmbeddingCuda(const EmbeddingCudaParams& p, void* stream) {
  RETURN_IF_ERROR(Check(p.num_tokens >= 0 && p.dim >= 1 && p.vocab >= 1 && p.out_row_stride >= p.dim &&
                            (p.num_tokens == 0 || (p.table != nullptr && p.ids != nullptr && p.out != nullptr)),
                        "EmbeddingCuda: shape out of range or null pointer"));
  if (p.num_tokens == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::EmbeddingShape(p);
  KVSPAN_LAUNCH(internal::EmbeddingKernel, s, stream, p);
  return Launched("EmbeddingCuda launch");
}

absl::Status KvAppendCuda(const KvAppendCudaParams& p, void* stream) {
  RETURN_IF_ERROR(Check(p.num_tokens >= 0 && p.num_kv_heads >= 1 && p.head_dim >= 1 && p.first >= 0 &&
                            p.src_row_stride >= int64_t{p.num_kv_heads} * p.head_dim &&
                            p.head_stride >= int64_t{p.first + p.num_tokens} * p.head_dim &&
                            (p.num_tokens == 0 || (p.k != nullptr && p.v != nullptr && p.cache_k != nullptr &&
                                                   p.cache_v != nullptr)),
                        "KvAppendCuda: shape out of range or null pointer"));
  if (p.num_tokens == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::KvAppendShape(p);
  KVSPAN_LAUNCH(internal::KvAppendKernel, s, stream, p);
  return Launched("KvAppendCuda launch");
}

absl::Status ArgmaxCuda(const ArgmaxCudaParams& p, void* stream) {
  RETURN_IF_ERROR(Check(p.num_rows >= 0 && p.vocab >= 1 && p.row_stride >= p.vocab &&
                            (p.num_rows == 0 || (p.logits != nullptr && p.out != nullptr)),
                        "ArgmaxCuda: shape out of range or null pointer"));
  if (p.num_rows == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::ArgmaxShape(p);
  KVSPAN_LAUNCH(internal::ArgmaxKernel, s, stream, p);
  return Launched("ArgmaxCuda launch");
}

uint64_t RandomFillSeed(uint64_t seed, uint64_t stream) {
  return internal::SplitMix64Mix(seed + (stream + 1) * 0xD1B54A32D192ED03ull);
}

absl::Status RandomUniformBf16Cuda(const RandomUniformBf16Params& p, void* stream) {
  RETURN_IF_ERROR(Check(p.count >= 0 && p.count <= internal::kRandomFillMaxCount && std::isfinite(p.bound) &&
                            p.bound >= 0.0f && (p.count == 0 || p.out != nullptr),
                        "RandomUniformBf16Cuda: count or bound out of range or null pointer"));
  if (p.count == 0) return absl::OkStatus();
  const internal::LaunchShape s = internal::RandomUniformBf16Shape(p);
  KVSPAN_LAUNCH(internal::RandomUniformBf16Kernel, s, stream, p);
  return Launched("RandomUniformBf16Cuda launch");
}

}  // namespace kvspan::kernels
