// Rotary position embeddings in HF transformers' rotate-half layout: for a head vector x
// of head_dim = 2 * half and i < half,
//   out[i]        = x[i] * cos(p * f_i) - x[i + half] * sin(p * f_i)
//   out[i + half] = x[i + half] * cos(p * f_i) + x[i] * sin(p * f_i)
// with inv_freq f_i = theta^(-2i / head_dim), optionally rescaled as transformers'
// _compute_llama3_parameters does ("llama3" rope_scaling).
//
// The fp32 functions follow transformers' fp32 arithmetic step by step (inv_freq in fp32,
// angle = float(position) * inv_freq in fp32, then cos/sin), so angles match PyTorch's to
// the last bit or so even at long positions. All functions are thread-safe.
#ifndef KVSPAN_KERNELS_ROPE_H_
#define KVSPAN_KERNELS_ROPE_H_

#include <cstdint>
#include <vector>

namespace kvspan::kernels {

struct RopeFrequencyOptions {
  int head_dim = 0;       // even, >= 2
  double theta = 10000.0;  // rope_theta
  // "llama3" scaling when true, with the four fields below (transformers' names).
  bool llama3_scaling = false;
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192;
};

// Returns inv_freq, head_dim / 2 values, in fp32 as transformers computes them.
std::vector<float> RopeInvFreq(const RopeFrequencyOptions& options);
// The same in double precision (reference for tests).
std::vector<double> RopeInvFreqRef(const RopeFrequencyOptions& options);

// cos/sin tables for `num_tokens` positions: cos[t * half + i] = cos(positions[t] * inv_freq[i]).
// positions: [num_tokens]; inv_freq: [half]; cos, sin: [num_tokens, half].
void RopeCosSin(const int32_t* positions, int num_tokens, const float* inv_freq, int half,
                float* cos, float* sin);

struct RopeParams {
  float* x = nullptr;          // [num_tokens, num_heads, head_dim], row stride x_row_stride; in place
  int64_t x_row_stride = 0;    // floats between tokens
  const float* cos = nullptr;  // [num_tokens, head_dim / 2] (RopeCosSin)
  const float* sin = nullptr;  // [num_tokens, head_dim / 2]
  int num_tokens = 0;
  int num_heads = 0;
  int head_dim = 0;            // even
};

// Rotates x in place using the cos/sin tables.
void ApplyRope(const RopeParams& p);

// Reference: rotates x in place computing every angle in double from positions
// ([num_tokens]) and inv_freq ([head_dim / 2], e.g. RopeInvFreqRef). p.cos/p.sin unused.
void ApplyRopeRef(const RopeParams& p, const int32_t* positions, const double* inv_freq);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_ROPE_H_
