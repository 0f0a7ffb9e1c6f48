// The small ops of the forward pass on the GPU: RMSNorm, SiLU·mul, RoPE, the embedding
// gather from bf16 weights, greedy argmax sampling, the append of new keys and values
// to a dense device KV cache, and random bf16 fills (weights made on the device for
// benchmarks, gpu::GpuModel::CreateRandom). Device pointers, enqueued on a
// stream (a cudaStream_t; null = the default stream), returning without waiting.
//
// Contracts: RmsNormCuda / SiluMulCuda compute RmsNormRef / SiluMulRef (rms_norm.h,
// activation.h) in fp32; RopeCuda the fp32 steps of RopeCosSin + ApplyRope (rope.h) from
// positions and RopeInvFreq's values; EmbeddingCuda row ids[t] of a bf16 table exactly;
// ArgmaxCuda model::ArgMax (largest finite logit, lowest id on ties, 0 when none is
// finite); RandomUniformBf16Cuda the formula at RandomUniformBf16Params, bit for bit.
// Tested against those CPU functions, on the GPU where there is one and in the CPU
// emulator (internal/cpu_emulator.h) everywhere.
//
// Errors: InvalidArgument for shapes out of range or null pointers (checked on the host
// first); Unavailable without a device; Internal for a launch error. Thread-safe.
// This header never includes CUDA headers (STYLE.md).
#ifndef KVSPAN_KERNELS_CUDA_ELEMENTWISE_CUDA_H_
#define KVSPAN_KERNELS_CUDA_ELEMENTWISE_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/activation.h"
#include "kernels/rms_norm.h"

namespace kvspan::kernels {

struct RopeCudaParams {
  float* x = nullptr;                  // [num_tokens, num_heads, head_dim], row stride x_row_stride; in place
  int64_t x_row_stride = 0;            // floats between tokens
  const int32_t* positions = nullptr;  // [num_tokens]
  const float* inv_freq = nullptr;     // [head_dim / 2], RopeInvFreq's fp32 values
  int num_tokens = 0;
  int num_heads = 0;
  int head_dim = 0;  // even, >= 2
};

struct EmbeddingCudaParams {
  const uint16_t* table = nullptr;  // [vocab, dim] bf16 bits
  const int32_t* ids = nullptr;     // [num_tokens]; REQUIRES each in [0, vocab) (the caller
                                    // checks request tokens; the device cannot report)
  float* out = nullptr;             // [num_tokens, dim], row stride out_row_stride floats
  int64_t out_row_stride = 0;
  int num_tokens = 0;
  int dim = 0;
  int vocab = 0;
};

struct ArgmaxCudaParams {
  const float* logits = nullptr;  // [num_rows, vocab], row stride row_stride floats
  int64_t row_stride = 0;
  int32_t* out = nullptr;  // [num_rows] token ids
  int num_rows = 0;
  int vocab = 0;
};

struct KvAppendCudaParams {
  const float* k = nullptr;    // [num_tokens, num_kv_heads, head_dim] new keys, row stride src_row_stride
  const float* v = nullptr;    // the same for values
  int64_t src_row_stride = 0;  // floats between tokens (a fused qkv row)
  float* cache_k = nullptr;    // one layer's [num_kv_heads, capacity, head_dim]: key t of head g
  float* cache_v = nullptr;    // at cache_k[g * head_stride + t * head_dim]
  int64_t head_stride = 0;     // floats between heads, >= capacity * head_dim
  int first = 0;               // cache slot of the first new token, >= 0
  int num_tokens = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// A counter-based random fill: element i of out, for the fill's seed, is in exact steps
//   z = seed + (i + 1) * 0x9E3779B97F4A7C15                        (mod 2^64)
//   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//   h = z ^ (z >> 31)                                              (SplitMix64's mix)
//   u = float(h >> 40) * 2^-24                                     (in [0, 1), exact)
//   out[i] = bf16((u * 2 - 1) * bound)   (one fp32 product, then round to nearest even)
// so any element can be recomputed on the host, and the values lie in [-bound, bound].
struct RandomUniformBf16Params {
  uint16_t* out = nullptr;  // [count] bf16 bits
  int64_t count = 0;        // >= 0
  uint64_t seed = 0;
  float bound = 1.0f;       // finite, >= 0
};

absl::Status RmsNormCuda(const RmsNormParams& p, void* stream);
// Copies the new keys and values into their cache slots [first, first + num_tokens).
absl::Status KvAppendCuda(const KvAppendCudaParams& p, void* stream);
absl::Status SiluMulCuda(const SiluMulParams& p, void* stream);
absl::Status RopeCuda(const RopeCudaParams& p, void* stream);
absl::Status EmbeddingCuda(const EmbeddingCudaParams& p, void* stream);
absl::Status ArgmaxCuda(const ArgmaxCudaParams& p, void* stream);
absl::Status RandomUniformBf16Cuda(const RandomUniformBf16Params& p, void* stream);
// The seed of fill `stream` in a family of fills drawn from `seed` (one per weight matrix,
// say): SplitMix64's mix of seed + (stream + 1) * 0xD1B54A32D192ED03, so that the fills'
// element streams are unrelated (seed + stream would make fill 1 fill 0 shifted by one
// element). Host code, no device needed.
uint64_t RandomFillSeed(uint64_t seed, uint64_t stream);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_ELEMENTWISE_CUDA_H_
