// The small ops of the forward pass on the GPU (elementwise_cuda.h), written against
// cuda_compat.h so that the same source runs on the GPU and in the CPU emulator. Each op
// has a launch shape function used by both (the emulated tests run the very grid the GPU
// runs).
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_KERNELS_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_KERNELS_CUH_

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/cuda/elementwise_cuda.h"
#include "kernels/cuda/internal/cuda_compat.h"
#include "kernels/cuda/internal/row_reductions.cuh"
#include "kernels/rms_norm.h"

namespace kvspan::kernels::internal {

inline LaunchShape RmsNormShape(const RmsNormParams& p) { return {dim3(p.num_rows), dim3(kRowThreads)}; }

KVSPAN_GLOBAL(kRowThreads) RmsNormKernel(RmsNormParams p) {
  const float* x = p.x + blockIdx.x * p.x_row_stride;
  float* out = p.out + blockIdx.x * p.out_row_stride;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < p.dim; i += kRowThreads) sum = fmaf(x[i], x[i], sum);
  sum = BlockSum(sum);
  const float inv_rms = 1.0f / sqrtf(sum / static_cast<float>(p.dim) + p.eps);
  for (int i = threadIdx.x; i < p.dim; i += kRowThreads) out[i] = p.weight[i] * (x[i] * inv_rms);
}

inline LaunchShape SiluMulShape(const SiluMulParams& p) {
  return {dim3((p.dim + 255) / 256, p.num_rows), dim3(256)};
}

KVSPAN_GLOBAL(256) SiluMulKernel(SiluMulParams p) {
  const int i = blockIdx.x * 256 + threadIdx.x;
  if (i >= p.dim) return;
  const int64_t in = blockIdx.y * p.in_row_stride + i;
  const float g = p.gate[in];
  const float u = p.up[in];
  p.out[blockIdx.y * p.out_row_stride + i] = g / (1.0f + expf(-g)) * u;
}

inline LaunchShape RopeShape(const RopeCudaParams& p) {
  const int pairs = p.num_heads * (p.head_dim / 2);
  return {dim3((pairs + 255) / 256, p.num_tokens), dim3(256)};
}

// The fp32 steps of RopeCosSin + ApplyRope: angle = float(position) * inv_freq (fp32),
// then cos/sin and the rotate-half rotation.
KVSPAN_GLOBAL(256) RopeKernel(RopeCudaParams p) {
  const int half = p.head_dim / 2;
  const int pair = blockIdx.x * 256 + threadIdx.x;
  if (pair >= p.num_heads * half) return;
  const int h = pair / half;
  const int i = pair % half;
  const int t = blockIdx.y;
  const float angle = static_cast<float>(p.positions[t]) * p.inv_freq[i];
  const float c = cosf(angle);
  const float s = sinf(angle);
  float* x = p.x + t * p.x_row_stride + h * p.head_dim;
  const float a = x[i];
  const float b = x[i + half];
  x[i] = a * c - b * s;
  x[i + half] = b * c + a * s;
}

inline LaunchShape EmbeddingShape(const EmbeddingCudaParams& p) {
  return {dim3((p.dim + 255) / 256, p.num_tokens), dim3(256)};
}

KVSPAN_GLOBAL(256) EmbeddingKernel(EmbeddingCudaParams p) {
  const int i = blockIdx.x * 256 + threadIdx.x;
  if (i >= p.dim) return;
  const int64_t id = p.ids[blockIdx.y];
  p.out[blockIdx.y * p.out_row_stride + i] = Bf16BitsToFloat(p.table[id * p.dim + i]);
}

inline LaunchShape ArgmaxShape(const ArgmaxCudaParams& p) { return {dim3(p.num_rows), dim3(kRowThreads)}; }

// model::ArgMax: the largest finite logit, lowest id on ties; 0 when none is finite.
KVSPAN_GLOBAL(kRowThreads) ArgmaxKernel(ArgmaxCudaParams p) {
  const int best_id = BlockArgmax(p.logits + blockIdx.x * p.row_stride, p.vocab);
  if (threadIdx.x == 0) p.out[blockIdx.x] = best_id < 0 ? 0 : best_id;
}

inline LaunchShape KvAppendShape(const KvAppendCudaParams& p) {
  return {dim3((p.num_kv_heads * p.head_dim + 255) / 256, p.num_tokens), dim3(256)};
}

KVSPAN_GLOBAL(256) KvAppendKernel(KvAppendCudaParams p) {
  const int i = blockIdx.x * 256 + threadIdx.x;
  if (i >= p.num_kv_heads * p.head_dim) return;
  const int t = blockIdx.y;
  const int g = i / p.head_dim;
  const int d = i % p.head_dim;
  const int64_t dst = g * p.head_stride + int64_t{p.first + t} * p.head_dim + d;
  p.cache_k[dst] = p.k[t * p.src_row_stride + i];
  p.cache_v[dst] = p.v[t * p.src_row_stride + i];
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_KERNELS_CUH_
