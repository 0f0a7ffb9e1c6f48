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

double Sampler::NextUniform() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (greedy()) return ArgMax(logits);
  const int32_t n = static_cast<int32_t>(logits.size());

  // Candidates: every finite logit, most likely first. Ties keep the lower id first, so
  // the order (and with it the sampled token) does not depend on the sort algorithm.
  order_.clear();
  for (int32_t i = 0; i < n; ++i) {
    if (std::isfinite(logits[i])) order_.push_back(i);
  }
  if (order_.empty()) return 0;
  auto more_likely = [&logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = order_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = options_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), more_likely);
    order_.resize(keep);
  } else {
    std::sort(order_.begin(), order_.end(), more_likely);
  }

  // Softmax of logit / temperature over the candidates, in double.
  probs_.resize(keep);
  const double max_scaled = logits[order_[0]] / options_.temperature;
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs_[i] = std::exp(logits[order_[i]] / options_.temperature - max_scaled);
    total += probs_[i];
  }
  // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
  if (options_.top_p < 1.0) {
    double mass = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      mass += probs_[i] / total;
      if (mass >= options_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = std::accumulate(probs_.begin(), probs_.begin() + keep, 0.0);
  }
  const double target = NextUniform() * total;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs_[i];
    if (target < acc) return order_[i];
  }
  return order_[keep - 1];  // rounding left target == total
}

}  // namespace kvspan::model
