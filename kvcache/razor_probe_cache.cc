#include "kvcache/razor_probe_cache.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/memory_bytes.h"
#include "common/status_macros.h"

namespace kvspan::kvcache {

EchoInduction ScoreQueryRow(absl::Span<const double> probs, int first_key, int position,
                            int segment_tokens) {
  EchoInduction s;
  const int echo_key = position - segment_tokens;
  const int induction_key = position - segment_tokens + 1;
  if (echo_key >= first_key) s.echo = probs[echo_key - first_key];
  if (induction_key >= first_key) s.induction = probs[induction_key - first_key];
  return s;
}

absl::StatusOr<std::unique_ptr<RazorProbeCache>> RazorProbeCache::Create(
    std::unique_ptr<model::DenseKvCache> dense, Options options) {
  if (dense == nullptr) return absl::InvalidArgumentError("RazorProbeCache: null dense cache");
  if (options.segment_tokens < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("RazorProbeCache: segment_tokens = ", options.segment_tokens, " < 2"));
  }
  if (options.first_scored_position < options.segment_tokens - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RazorProbeCache: first_scored_position = ", options.first_scored_position,
        " < segment_tokens - 1 = ", options.segment_tokens - 1));
  }
  return std::unique_ptr<RazorProbeCache>(new RazorProbeCache(std::move(dense), std::move(options)));
}

RazorProbeCache::RazorProbeCache(std::unique_ptr<model::DenseKvCache> dense, Options options)
    : dense_(std::move(dense)), options_(std::move(options)) {
  const model::DenseKvCache::Options& o = dense_->options();
  const size_t n = static_cast<size_t>(o.num_layers) * o.num_heads;
  echo_sum_.assign(n, 0.0);
  induction_sum_.assign(n, 0.0);
  pending_echo_.assign(n, 0.0);
  pending_induction_.assign(n, 0.0);
}

void RazorProbeCache::ClearPending() {
  std::fill(pending_echo_.begin(), pending_echo_.end(), 0.0);
  std::fill(pending_induction_.begin(), pending_induction_.end(), 0.0);
}

absl::Status RazorProbeCache::AppendAndAttend(int layer, const model::LayerQkv& in, float* out,
                                              ThreadPool* pool) {
  const int base = dense_->num_tokens();
  RETURN_IF_ERROR(dense_->AppendAndAttend(layer, in, out, pool));

  const model::DenseKvCache::Options& o = dense_->options();
  const int hd = o.head_dim;
  const int group = o.num_heads / o.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  // Keys of this step are appended but not committed: read them from `in`.
  auto key_at = [&](int g, int t) -> const float* {
    return t < base ? dense_->key(layer, g, t) : in.k + int64_t{t - base} * in.row_stride + g * hd;
  };

  const size_t row0 = static_cast<size_t>(layer) * o.num_heads;
  std::fill_n(pending_echo_.begin() + row0, o.num_heads, 0.0);
  std::fill_n(pending_induction_.begin() + row0, o.num_heads, 0.0);
  std::vector<double> probs;
  for (int j = 0; j < in.num_new; ++j) {
    const int p = base + j;
    if (p < options_.first_scored_position) continue;
    const int first_key = o.sliding_window > 0 ? std::max(0, p - o.sliding_window + 1) : 0;
    probs.resize(p - first_key + 1);
    for (int h = 0; h < o.num_heads; ++h) {
      const float* q = in.q + int64_t{j} * in.row_stride + int64_t{h} * hd;
      const int g = h / group;
      double max_logit = -INFINITY;
      for (int t = first_key; t <= p; ++t) {
        const float* k = key_at(g, t);
        double dot = 0.0;
        for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * k[d];
        probs[t - first_key] = dot * scale;
        max_logit = std::max(max_logit, probs[t - first_key]);
      }
      double sum = 0.0;
      for (double& x : probs) {
        x = std::exp(x - max_logit);
        sum += x;
      }
      for (double& x : probs) x /= sum;
      const EchoInduction s = ScoreQueryRow(probs, first_key, p, options_.segment_tokens);
      pending_echo_[row0 + h] += s.echo;
      pending_induction_[row0 + h] += s.induction;
      if (options_.observer) options_.observer(layer, h, p, first_key, probs);
    }
  }
  return absl::OkStatus();
}

absl::Status RazorProbeCache::Commit(int n) {
  const int base = dense_->num_tokens();
  RETURN_IF_ERROR(dense_->Commit(n));
  for (size_t i = 0; i < echo_sum_.size(); ++i) {
    echo_sum_[i] += pending_echo_[i];
    induction_sum_[i] += pending_induction_[i];
  }
  // The committed positions [base, base + n) at or past the first scored one.
  num_scored_ += std::max(0, base + n - std::max(base, options_.first_scored_position));
  ClearPending();
  return absl::OkStatus();
}

void RazorProbeCache::Truncate(int num_tokens) {
  dense_->Truncate(num_tokens);
  ClearPending();
}

int64_t RazorProbeCache::memory_bytes() const {
  return dense_->memory_bytes() + CapacityBytes(echo_sum_) + CapacityBytes(induction_sum_) +
         CapacityBytes(pending_echo_) + CapacityBytes(pending_induction_);
}

std::vector<double> RazorProbeCache::Mean(const std::vector<double>& sums) const {
  std::vector<double> mean(sums.size(), 0.0);
  if (num_scored_ == 0) return mean;
  for (size_t i = 0; i < mean.size(); ++i) mean[i] = sums[i] / num_scored_;
  return mean;
}

}  // namespace kvspan::kvcache
