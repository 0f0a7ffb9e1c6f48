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

// RandomUniformBf16Params' formula: each thread fills kRandomPerThread elements, a block's
// 256 threads adjacent at each of them (coalesced stores).
inline constexpr int kRandomPerThread = 8;
inline constexpr int64_t kRandomElementsPerBlock = int64_t{256} * kRandomPerThread;
// The most elements one fill takes: its blocks fit a grid's x dimension.
inline constexpr int64_t kRandomFillMaxCount = int64_t{0x7fffffff} * kRandomElementsPerBlock;

// SplitMix64's finalizer (the mix of RandomUniformBf16Params' formula).
KVSPAN_HOST_DEVICE uint64_t SplitMix64Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline LaunchShape RandomUniformBf16Shape(const RandomUniformBf16Params& p) {
  return {dim3(static_cast<unsigned>((p.count + kRandomElementsPerBlock - 1) / kRandomElementsPerBlock)), dim3(256)};
}

KVSPAN_GLOBAL(256) RandomUniformBf16Kernel(RandomUniformBf16Params p) {
  const int64_t first = int64_t{blockIdx.x} * kRandomElementsPerBlock + threadIdx.x;
  KVSPAN_UNROLL
  for (int k = 0; k < kRandomPerThread; ++k) {
    const int64_t i = first + int64_t{k} * 256;
    if (i >= p.count) return;
    const uint64_t z = SplitMix64Mix(p.seed + static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull);
    const float u = static_cast<float>(z >> 40) * 0x1p-24f;
    p.out[i] = FloatToBf16Bits((u * 2.0f - 1.0f) * p.bound);
  }
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_KERNELS_CUH_
