#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <string>

#include "common/status_macros.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/device_memory.h"

namespace kvspan::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHeadDim = 256;

// One block per (query j, head h). Scores of all visible keys go to `scores`
// ([num_q, num_heads, num_keys] scratch in global memory), then a block-wide softmax,
// then each thread accumulates some dimensions of the weighted sum of values.
__global__ void AttentionKernel(AttentionParams p, float* scores) {
  const int j = blockIdx.y;
  const int h = blockIdx.x;
  const int g = h / (p.num_heads / p.num_kv_heads);
  const int pos = p.q_start + j;
  const int first = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const float* q = p.q + j * p.q_row_stride + h * p.head_dim;
  float* row = scores + (static_cast<int64_t>(j) * p.num_heads + h) * p.num_keys;

  __shared__ float q_shared[kMaxHeadDim];
  __shared__ float reduce[kThreads];
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) q_shared[d] = q[d];
  __syncthreads();

  float local_max = -FLT_MAX;
  for (int t = first + threadIdx.x; t <= pos; t += blockDim.x) {
    const float* k = p.k + g * p.k_head_stride + t * p.k_token_stride;
    float dot = 0.f;
    for (int d = 0; d < p.head_dim; ++d) dot += q_shared[d] * k[d];
    dot *= p.scale;
    row[t] = dot;
    local_max = fmaxf(local_max, dot);
  }
  reduce[threadIdx.x] = local_max;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) reduce[threadIdx.x] = fmaxf(reduce[threadIdx.x], reduce[threadIdx.x + s]);
    __syncthreads();
  }
  const float max_score = reduce[0];
  __syncthreads();

  float local_sum = 0.f;
  for (int t = first + threadIdx.x; t <= pos; t += blockDim.x) {
    const float e = __expf(row[t] - max_score);
    row[t] = e;
    local_sum += e;
  }
  reduce[threadIdx.x] = local_sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) reduce[threadIdx.x] += reduce[threadIdx.x + s];
    __syncthreads();
  }
  const float inv_sum = 1.f / reduce[0];

  float* out = p.out + j * p.out_row_stride + h * p.head_dim;
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float acc = 0.f;
    for (int t = first; t <= pos; ++t) acc += row[t] * p.v[g * p.v_head_stride + t * p.v_token_stride + d];
    out[d] = acc * inv_sum;
  }
}

// Floats spanned by a strided [outer, inner, head_dim] buffer.
int64_t Extent(int outer, int64_t outer_stride, int inner, int64_t inner_stride, int head_dim) {
  return (outer - 1) * outer_stride + (inner - 1) * inner_stride + head_dim;
}

}  // namespace

absl::Status AttentionCuda(const AttentionParams& p) {
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  if (p.head_dim < 1 || p.head_dim > kMaxHeadDim || p.num_q < 1 || p.num_kv_heads < 1 ||
      p.num_heads % p.num_kv_heads != 0 || p.num_keys < p.q_start + p.num_q) {
    return absl::InvalidArgumentError("AttentionCuda: params out of range");
  }
  const int64_t q_floats = (p.num_q - 1) * p.q_row_stride + p.num_heads * p.head_dim;
  const int64_t out_floats = (p.num_q - 1) * p.out_row_stride + p.num_heads * p.head_dim;
  const int64_t k_floats = Extent(p.num_kv_heads, p.k_head_stride, p.num_keys, p.k_token_stride, p.head_dim);
  const int64_t v_floats = Extent(p.num_kv_heads, p.v_head_stride, p.num_keys, p.v_token_stride, p.head_dim);
  const int64_t score_floats = static_cast<int64_t>(p.num_q) * p.num_heads * p.num_keys;

  DeviceBuffer q, k, v, out, scores;
  RETURN_IF_ERROR(q.Reserve(q_floats * 4));
  RETURN_IF_ERROR(k.Reserve(k_floats * 4));
  RETURN_IF_ERROR(v.Reserve(v_floats * 4));
  RETURN_IF_ERROR(out.Reserve(out_floats * 4));
  RETURN_IF_ERROR(scores.Reserve(score_floats * 4));
  RETURN_IF_ERROR(q.CopyFromHost(p.q, q_floats * 4));
  RETURN_IF_ERROR(k.CopyFromHost(p.k, k_floats * 4));
  RETURN_IF_ERROR(v.CopyFromHost(p.v, v_floats * 4));
  RETURN_IF_ERROR(out.CopyFromHost(p.out, out_floats * 4));
  AttentionParams d = p;
  d.q = q.as<float>();
  d.k = k.as<float>();
  d.v = v.as<float>();
  d.out = out.as<float>();
  AttentionKernel<<<dim3(p.num_heads, p.num_q), kThreads>>>(d, scores.as<float>());
  RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "launch"));
  return out.CopyToHost(p.out, out_floats * 4);
}

}  // namespace kvspan::kernels
