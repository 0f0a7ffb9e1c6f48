// The sampling kernel (sampling_cuda.h), written against cuda_compat.h so that the same
// source runs on the GPU and in the CPU emulator. One block of kRowThreads per row.
//
// Every choice is a select in the candidates' order: each candidate's rank is a 64-bit
// integer, larger = earlier (the float's order-preserving key, then 2^32 - 1 - id, so ties go
// to the lower id), and "the first candidate at which the cumulative weight reaches theta"
// is found a byte of the rank at a time from the top: a histogram of the weights of the
// candidates under the prefix decided so far, scanned from the highest bin. Weights are
// integers (a count, or the probability in fixed point), so the histograms are exact in any
// order of the atomics and the token is deterministic.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_SAMPLING_KERNELS_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_SAMPLING_KERNELS_CUH_

#include <cstdint>

#include "kernels/cuda/internal/cuda_compat.h"
#include "kernels/cuda/internal/row_reductions.cuh"
#include "kernels/cuda/sampling_cuda.h"

namespace kvspan::kernels::internal {

// Rows carried by value in one launch's parameters (2 KiB of CUDA's 4 KiB), so a launch
// needs no upload and the host can check every row first.
inline constexpr int kSampleRowsPerLaunch = 64;
inline constexpr int kSampleBins = 256;  // one byte of the rank per pass
static_assert(kRowThreads == kSampleBins, "each thread clears one histogram bin");

struct SampleKernelParams {
  const float* logits = nullptr;  // [gridDim.x, vocab] this launch's rows, row stride row_stride floats
  int64_t row_stride = 0;
  int32_t* out = nullptr;  // [gridDim.x] token ids
  int vocab = 0;
  SampleCudaRow rows[kSampleRowsPerLaunch];  // [gridDim.x]
};

inline LaunchShape SampleShape(int num_rows) { return {dim3(num_rows), dim3(kRowThreads)}; }

// The order-preserving key of a finite float: a larger value has a larger key. -0 takes +0's
// key, as the two compare equal (and then tie, broken by id).
KVSPAN_DEVICE uint32_t OrderKey(float v) {
  const uint32_t bits = FloatBits(v);
  if ((bits & 0x7fffffffu) == 0) return 0x80000000u;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

KVSPAN_DEVICE unsigned long long Rank(uint32_t key, int id) {
  return (static_cast<unsigned long long>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}

KVSPAN_DEVICE int RankId(unsigned long long rank) {
  return static_cast<int>(0xffffffffu - static_cast<uint32_t>(rank & 0xffffffffu));
}

// The smallest c with 2^c >= n. REQUIRES: n >= 1.
KVSPAN_DEVICE int CeilLog2(int n) {
  int c = 0;
  while ((int64_t{1} << c) < n) ++c;
  return c;
}

// What the weights of one row need.
struct SampleRow {
  const float* logits;  // [vocab]
  int vocab;
  double temperature;  // > 0
  double max_scaled;   // the largest finite logit / temperature
  double scale;        // 2^F, F = 63 - CeilLog2(vocab): vocab weights of at most 2^F sum below 2^64
  double zero_below;   // -(F + 2) ln 2: exp(x) · 2^F < 1/4 below it, so the weight is 0 without exp
};

// A candidate's probability in fixed point: round(exp(logit / T - max / T) · 2^F), the
// exponent in double exactly as model::SampleWithUniform computes it. At most 2^F (the most
// likely candidate weighs exactly 2^F).
KVSPAN_DEVICE unsigned long long FixedWeight(float logit, const SampleRow& s) {
  const double x = static_cast<double>(logit) / s.temperature - s.max_scaled;
  if (x < s.zero_below) return 0;
  return static_cast<unsigned long long>(exp(x) * s.scale + 0.5);
}

enum class SelectWeight { kCount, kProbability };

// How a select's threshold follows from W, the total weight of the candidates it ranks.
enum class SelectTarget {
  kFixed,  // theta = fixed (the top-k cut: the fixed-th candidate)
  kShare,  // theta = max(1, ceil(fraction · W)): the nucleus, mass >= top_p of the total
  kDraw,   // theta = min(W, floor(fraction · W) + 1): the sample, mass > u of the total
};

struct SelectResult {
  bool found;                  // false: W < theta (fewer candidates than top_k)
  unsigned long long rank;     // the first candidate whose cumulative weight reaches theta
  unsigned long long through;  // the cumulative weight up to and including it
};

KVSPAN_DEVICE unsigned long long SelectTheta(SelectTarget target, double fraction, unsigned long long fixed,
                                             unsigned long long total) {
  if (target == SelectTarget::kFixed) return fixed;
  const double x = fraction * static_cast<double>(total);
  unsigned long long t = static_cast<unsigned long long>(x);  // floor: x >= 0
  if (target == SelectTarget::kShare) {
    if (static_cast<double>(t) < x) ++t;
    return t < 1 ? 1 : t;
  }
  ++t;
  return t > total ? total : t;
}

// Among the row's candidates (finite logits) of rank >= lo, in the order, the first at which
// the cumulative weight reaches the target's theta. Returned in every thread. REQUIRES: all
// kRowThreads threads of the block call it with the same arguments.
KVSPAN_DEVICE SelectResult RadixSelect(const SampleRow& s, unsigned long long lo, SelectWeight weight,
                                       SelectTarget target, double fraction, unsigned long long fixed) {
  __shared__ unsigned long long bin_weight[kSampleBins];
  __shared__ unsigned bin_count[kSampleBins];
  // The decision of thread 0 after each pass, for all: the rank's bits decided so far, the
  // weight of the candidates above them in the order, theta, and the state below.
  __shared__ unsigned long long sel_prefix, sel_above, sel_theta, sel_through, sel_rank;
  __shared__ int sel_state;
  constexpr int kContinue = 0, kDone = 1, kOneLeft = 2, kNotFound = 3;

  for (int shift = 56;; shift -= 8) {
    bin_weight[threadIdx.x] = 0;
    bin_count[threadIdx.x] = 0;
    __syncthreads();
    const unsigned long long prefix = shift == 56 ? 0 : sel_prefix;
    const unsigned long long decided = shift == 56 ? 0 : ~0ull << (shift + 8);
    // Runs of one bin are summed in registers first: a row's logits fill few bins of the top
    // bytes, and a shared atomic per candidate would serialize on them.
    int run_bin = -1;
    unsigned long long run_weight = 0;
    unsigned run_count = 0;
    for (int i = threadIdx.x; i < s.vocab; i += kRowThreads) {
      const float v = s.logits[i];
      if (!IsFiniteFloat(v)) continue;
      const unsigned long long rank = Rank(OrderKey(v), i);
      if (rank < lo || ((rank ^ prefix) & decided) != 0) continue;
      const int bin = static_cast<int>((rank >> shift) & 0xff);
      if (bin != run_bin) {
        if (run_bin >= 0) {
          atomicAdd(&bin_weight[run_bin], run_weight);
          atomicAdd(&bin_count[run_bin], run_count);
        }
        run_bin = bin;
        run_weight = 0;
        run_count = 0;
      }
      run_weight += weight == SelectWeight::kCount ? 1ull : FixedWeight(v, s);
      ++run_count;
    }
    if (run_bin >= 0) {
      atomicAdd(&bin_weight[run_bin], run_weight);
      atomicAdd(&bin_count[run_bin], run_count);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long above = shift == 56 ? 0 : sel_above;
      unsigned long long theta = sel_theta;
      bool found = true;
      if (shift == 56) {
        unsigned long long total = 0;
        for (int b = 0; b < kSampleBins; ++b) total += bin_weight[b];
        theta = SelectTheta(target, fraction, fixed, total);
        sel_theta = theta;
        found = theta <= total;
      }
      if (!found) {
        sel_state = kNotFound;
      } else {
        // The bins below the prefix hold at least theta - above: the scan stops at one.
        int b = kSampleBins - 1;
        while (above + bin_weight[b] < theta) above += bin_weight[b--];
        sel_prefix = prefix | (static_cast<unsigned long long>(b) << shift);
        sel_above = above;
        sel_through = above + bin_weight[b];
        sel_state = shift == 0 ? kDone : bin_count[b] == 1 ? kOneLeft : kContinue;
        if (shift == 0) sel_rank = sel_prefix;
      }
    }
    __syncthreads();
    const int state = sel_state;
    if (state == kContinue) continue;
    if (state == kOneLeft) {
      // The one candidate under the prefix is the answer: find its full rank.
      const unsigned long long fixed_bits = ~0ull << shift;
      const unsigned long long p = sel_prefix;
      for (int i = threadIdx.x; i < s.vocab; i += kRowThreads) {
        const float v = s.logits[i];
        if (!IsFiniteFloat(v)) continue;
        const unsigned long long rank = Rank(OrderKey(v), i);
        if (rank >= lo && ((rank ^ p) & fixed_bits) == 0) sel_rank = rank;
      }
      __syncthreads();
    }
    return {state != kNotFound, sel_rank, sel_through};
  }
}

// model::SampleWithUniform for row blockIdx.x: greedy through BlockArgmax; otherwise the
// top-k cut (a count select), the nucleus cut and the sample (probability selects over what
// the previous cut kept).
KVSPAN_GLOBAL(kRowThreads) SampleKernel(SampleKernelParams p) {
  const float* logits = p.logits + blockIdx.x * p.row_stride;
  const double temperature = p.rows[blockIdx.x].temperature;
  const int top_k = p.rows[blockIdx.x].top_k;
  const double top_p = p.rows[blockIdx.x].top_p;
  const double u = p.rows[blockIdx.x].u;
  const int best = BlockArgmax(logits, p.vocab);
  if (temperature == 0.0 || best < 0) {
    if (threadIdx.x == 0) p.out[blockIdx.x] = best < 0 ? 0 : best;
    return;
  }
  const int fraction_bits = 63 - CeilLog2(p.vocab);
  SampleRow s;
  s.logits = logits;
  s.vocab = p.vocab;
  s.temperature = temperature;
  s.max_scaled = static_cast<double>(logits[best]) / temperature;
  s.scale = static_cast<double>(1ull << fraction_bits);
  s.zero_below = -(fraction_bits + 2) * 0.69314718055994531;
  unsigned long long lo = 0;  // the last kept candidate's rank: every finite logit so far
  if (top_k > 0) {
    const SelectResult k = RadixSelect(s, lo, SelectWeight::kCount, SelectTarget::kFixed, 0.0,
                                       static_cast<unsigned long long>(top_k));
    if (k.found) lo = k.rank;  // else no more than top_k candidates: all stay
  }
  if (top_p < 1.0) {
    lo = RadixSelect(s, lo, SelectWeight::kProbability, SelectTarget::kShare, top_p, 0).rank;
  }
  const SelectResult token = RadixSelect(s, lo, SelectWeight::kProbability, SelectTarget::kDraw, u, 0);
  if (threadIdx.x == 0) p.out[blockIdx.x] = RankId(token.rank);
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_SAMPLING_KERNELS_CUH_
