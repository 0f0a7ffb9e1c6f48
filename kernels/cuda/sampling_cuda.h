// Token sampling on the GPU: one token per row of fp32 logits in device memory, by greedy
// argmax, temperature, top-k and top-p, with the row's uniform draw u given by the caller
// (model::Sampler::DrawUniform), so only the token id (4 bytes a row) leaves the device.
// Enqueued on a stream (a cudaStream_t; null = the default stream), returning without
// waiting.
//
// Contract: the token model::SampleWithUniform (model/sampler.h) returns for the same
// logits, options and u, with its rule for every choice that involves no sum: non-finite
// logits are not candidates, the order is by logit with the lower id first on ties (-0 and
// +0 tie), top-k keeps the first top_k, greedy is model::ArgMax (ArgmaxCuda's reduction).
// The sums differ in how they round: each candidate's probability exp(logit / temperature -
// max / temperature) is computed in double as the reference does and then held in fixed
// point, round(p · 2^F) with F = 63 - ceil(log2(vocab)), so that every sum is exact in
// uint64, in any order, and the result deterministic. A CDF boundary (the mass of a prefix
// of the order over the mass kept) and the nucleus cut's share of the mass may therefore
// move by at most eps = vocab · (2^-F + 2^-50) (the fixed-point rounding, 2^-(F+1) per
// candidate on each of the two sums, against a mass of at least 1 since the most likely
// candidate weighs exactly 1; plus exp's and the reference's double sums, under 2^-51 per
// candidate): only a u within eps of a boundary (vocab 128256: eps ≈ 1.9e-9) or a top_p
// within eps of a prefix's share may pick the neighbouring token. Tested against
// SampleWithUniform on the GPU where there is one and in the CPU emulator everywhere.
//
// Work: one block of 256 threads per row, no scratch memory. The top-k cut, the nucleus cut
// and the sample are each a radix select over the 64-bit rank (the float's order-preserving
// key, then the inverted id) weighted by 1 or by the fixed-point probability: a byte per pass
// from the top, a histogram of the prefix's candidates, stopping once one candidate is left;
// each pass reads the row (from L2), only the first computes every candidate's exp.
//
// Errors: InvalidArgument (checked on the host first) for num_rows < 1, vocab < 1,
// row_stride < vocab, a null pointer, a row whose options model::ValidateSamplingOptions
// rejects (temperature not finite or < 0, top_k < 0, top_p outside (0, 1]) or, unless
// greedy, a u outside [0, 1); Unavailable without a device; Internal for a launch error.
// Thread-safe. This header never includes CUDA headers (STYLE.md).
#ifndef KVSPAN_KERNELS_CUDA_SAMPLING_CUDA_H_
#define KVSPAN_KERNELS_CUDA_SAMPLING_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"

namespace kvspan::kernels {

// One row's choice: model::SamplingOptions without the seed, plus the row's draw.
struct SampleCudaRow {
  double temperature = 1.0;  // 0 = greedy (argmax, lowest id on ties; u unused)
  int32_t top_k = 0;         // keep the top_k most likely candidates; 0 = no limit
  double top_p = 1.0;        // in (0, 1]: keep the shortest prefix reaching this mass; 1 = all
  double u = 0.0;            // the row's uniform draw in [0, 1)
};

struct SampleCudaParams {
  const float* logits = nullptr;        // [num_rows, vocab] device, row stride row_stride floats
  int64_t row_stride = 0;               // floats between rows, >= vocab
  const SampleCudaRow* rows = nullptr;  // [num_rows] host memory, read before SampleCuda returns
  int32_t* out = nullptr;               // [num_rows] device: the token ids
  int num_rows = 0;
  int vocab = 0;
};

absl::Status SampleCuda(const SampleCudaParams& p, void* stream);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_SAMPLING_CUDA_H_
