// Token sampling from a row of logits: greedy, temperature, top-k, top-p, seeded.
// The random stream is std::mt19937_64 (its output is fixed by the C++ standard) mapped
// to [0, 1) by hand, so a seed gives the same tokens on every platform and build.
#ifndef KVSPAN_MODEL_SAMPLER_H_
#define KVSPAN_MODEL_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvspan::model {

struct SamplingOptions {
  // 0 = greedy (argmax, lowest id on ties); otherwise logits are divided by it.
  double temperature = 1.0;
  // Keep only the k most likely tokens; 0 = no limit.
  int top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches top_p; 1 = all.
  double top_p = 1.0;
  // Seed of the random stream (unused when greedy).
  uint64_t seed = 0;
};

// InvalidArgument, naming the field, for temperature < 0 or not finite, top_k < 0,
// top_p outside (0, 1].
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// Candidate ids and their probabilities, reused across calls so that sampling over a large
// vocabulary allocates nothing per token. Not thread-safe: one per caller.
struct SamplingScratch {
  std::vector<int32_t> order;  // candidate ids, most likely first
  std::vector<double> probs;   // their unnormalized probabilities
};

// The token that options (seed unused) pick from `logits` for the uniform draw `u`: what
// Sampler::Sample returns after drawing u. The specification of every sampler (the device's
// in kernels/cuda/sampling_cuda.h is tested against it):
//   - greedy (temperature 0): ArgMax(logits); u is unused.
//   - candidates: the finite logits, ordered by logit, the lower id first on ties; none: 0.
//   - top_k > 0: the first top_k candidates.
//   - probabilities exp(logit / temperature - max / temperature) in double, over the
//     candidates in order.
//   - top_p < 1: the shortest prefix whose share of the mass reaches top_p (at least one).
//   - the first kept candidate whose cumulative mass exceeds u * (mass kept); the last kept
//     one when rounding leaves none.
// REQUIRES: !logits.empty(), ValidateSamplingOptions(options).ok(), 0 <= u < 1.
// Thread-safe (the overload with scratch: for distinct scratch).
int32_t SampleWithUniform(absl::Span<const float> logits, const SamplingOptions& options, double u,
                          SamplingScratch* scratch);
int32_t SampleWithUniform(absl::Span<const float> logits, const SamplingOptions& options, double u);

// Not thread-safe: one Sampler per sequence.
class Sampler {
 public:
  // InvalidArgument as ValidateSamplingOptions.
  static absl::StatusOr<Sampler> Create(const SamplingOptions& options);

  // Returns a token id in [0, logits.size()): SampleWithUniform(logits, options(), u) with
  // u the stream's next draw, drawn only when not greedy and some logit is finite.
  // REQUIRES: !logits.empty(). Non-finite logits count as -inf; if every logit is -inf,
  // returns the argmax (0).
  int32_t Sample(absl::Span<const float> logits);

  // The stream's next uniform in [0, 1), for a caller that samples elsewhere (on the device,
  // kernels/cuda/sampling_cuda.h) with SampleWithUniform's rule: draw once per non-greedy
  // token and no logits ever reach the host. Its stream equals Sample's as long as every
  // row has a finite logit (Sample draws nothing for a row with none; both return 0 there).
  double DrawUniform();

  const SamplingOptions& options() const { return options_; }
  bool greedy() const { return options_.temperature == 0.0; }

 private:
  explicit Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

  SamplingOptions options_;
  std::mt19937_64 rng_;
  SamplingScratch scratch_;
};

// Index of the largest finite value, lowest index on ties; 0 if none is finite.
int32_t ArgMax(absl::Span<const float> logits);

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_SAMPLER_H_
