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

// Not thread-safe: one Sampler per sequence.
class Sampler {
 public:
  // InvalidArgument as ValidateSamplingOptions.
  static absl::StatusOr<Sampler> Create(const SamplingOptions& options);

  // Returns a token id in [0, logits.size()). REQUIRES: !logits.empty().
  // Non-finite logits count as -inf; if every logit is -inf, returns the argmax (0).
  int32_t Sample(absl::Span<const float> logits);

  bool greedy() const { return options_.temperature == 0.0; }

 private:
  explicit Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}
  double NextUniform();  // in [0, 1)

  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;  // scratch: candidate ids
  std::vector<double> probs_;   // scratch: their probabilities
};

// Index of the largest finite value, lowest index on ties; 0 if none is finite.
int32_t ArgMax(absl::Span<const float> logits);

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_SAMPLER_H_
