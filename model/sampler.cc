#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace kvspan::model {

absl::Status ValidateSamplingOptions(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", o.temperature));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", o.top_p));
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::Create(const SamplingOptions& options) {
  absl::Status s = ValidateSamplingOptions(options);
  if (!s.ok()) return s;
  return Sampler(options);
}

int32_t ArgMax(absl::Span<const float> logits) {
  int32_t best = 0;
  float best_value = -INFINITY;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i]) && logits[i] > best_value) {
      best_value = logits[i];
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

namespace {

// SampleWithUniform, drawing u only once it is needed (not greedy, some logit finite), so
// that Sampler::Sample advances its stream exactly when it always has.
template <typename DrawUniformFn>
int32_t SampleImpl(absl::Span<const float> logits, const SamplingOptions& options, DrawUniformFn draw_uniform,
                   SamplingScratch& scratch) {
  if (options.temperature == 0.0) return ArgMax(logits);
  const int32_t n = static_cast<int32_t>(logits.size());
  std::vector<int32_t>& order = scratch.order;
  std::vector<double>& probs = scratch.probs;

  // Candidates: every finite logit, most likely first. Ties keep the lower id first, so
  // the order (and with it the sampled token) does not depend on the sort algorithm.
  order.clear();
  for (int32_t i = 0; i < n; ++i) {
    if (std::isfinite(logits[i])) order.push_back(i);
  }
  if (order.empty()) return 0;
  auto more_likely = [&logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = order.size();
  if (options.top_k > 0 && static_cast<size_t>(options.top_k) < keep) {
    keep = options.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), more_likely);
    order.resize(keep);
  } else {
    std::sort(order.begin(), order.end(), more_likely);
  }

  // Softmax of logit / temperature over the candidates, in double.
  probs.resize(keep);
  const double max_scaled = logits[order[0]] / options.temperature;
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(logits[order[i]] / options.temperature - max_scaled);
    total += probs[i];
  }
  // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
  if (options.top_p < 1.0) {
    double mass = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      mass += probs[i] / total;
      if (mass >= options.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  }
  const double target = draw_uniform() * total;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (target < acc) return order[i];
  }
  return order[keep - 1];  // rounding left target == total
}

}  // namespace

int32_t SampleWithUniform(absl::Span<const float> logits, const SamplingOptions& options, double u,
                          SamplingScratch* scratch) {
  return SampleImpl(logits, options, [u] { return u; }, *scratch);
}

int32_t SampleWithUniform(absl::Span<const float> logits, const SamplingOptions& options, double u) {
  SamplingScratch scratch;
  return SampleWithUniform(logits, options, u, &scratch);
}

double Sampler::DrawUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Sample(absl::Span<const float> logits) {
  return SampleImpl(logits, options_, [this] { return DrawUniform(); }, scratch_);
}

}  // namespace kvspan::model
