#include "kvcache/reducers/expected_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>


namespace kvspan::kvcache::reducers {
namespace {

// Rotates the pairs (x[i], x[i + D/2]) of a D-vector by the 2x2 matrices [[c, -s], [s, c]].
void RotatePairs(const std::vector<double>& c, const std::vector<double>& s, double* x, int d) {
  const int half = d / 2;
  for (int i = 0; i < half; ++i) {
    const double a = x[i];
    const double b = x[i + half];
    x[i] = c[i] * a - s[i] * b;
    x[i + half] = s[i] * a + c[i] * b;
  }
}

}  // namespace

ExpectedAttentionRope MakeExpectedAttentionRope(absl::Span<const float> inv_freq,
                                                absl::Span<const int32_t> query_positions, int32_t span_end,
                                                int future) {
  ExpectedAttentionRope rope;
  const int half = static_cast<int>(inv_freq.size());
  if (half == 0) return rope;
  for (int32_t position : query_positions) {
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(position) * inv_freq[i];
      rope.query_cos.push_back(std::cos(angle));
      rope.query_sin.push_back(std::sin(angle));
    }
  }
  for (int i = 0; i < half; ++i) {
    double cs = 0.0, sn = 0.0;
    for (int t = 0; t < future; ++t) {
      const double angle = static_cast<double>(span_end + t) * inv_freq[i];
      cs += std::cos(angle);
      sn += std::sin(angle);
    }
    rope.future_cos.push_back(cs / future);
    rope.future_sin.push_back(sn / future);
  }
  return rope;
}

std::vector<double> ExpectedAttentionScores(const ExpectedAttentionOptions& options, const QueryRows& own,
                                            const TokenRows& rows) {
  const int m = rows.size();
  const int d = rows.head_dim;
  const int n = own.num_tokens();
  const ExpectedAttentionRope* rope = options.rope != nullptr && !options.rope->future_cos.empty() ? options.rope
                                                                                                   : nullptr;
  const int half = d / 2;
  // The average future rotation (identity without RoPE).
  const std::vector<double> c_bar = rope != nullptr ? rope->future_cos : std::vector<double>(half, 1.0);
  const std::vector<double> s_bar = rope != nullptr ? rope->future_sin : std::vector<double>(half, 0.0);
  std::vector<double> value_norms(m);
  for (int i = 0; i < m; ++i) value_norms[i] = std::sqrt(SquaredNorm(rows.value(i), d));

  std::vector<double> scores(m, 0.0);
  std::vector<double> pre(static_cast<size_t>(n) * d);
  std::vector<double> mu(d), sigma(static_cast<size_t>(d) * d), logits(m);
  std::vector<double> cos_p(half), sin_p(half);
  for (int h = 0; h < own.group; ++h) {
    // 1. pre-RoPE queries: rotate by -f_i * position.
    for (int j = 0; j < n; ++j) {
      double* x = &pre[static_cast<size_t>(j) * d];
      const float* q = own.row(j, h);
      for (int c = 0; c < d; ++c) x[c] = q[c];
      if (rope != nullptr) {
        for (int i = 0; i < half; ++i) {
          cos_p[i] = rope->query_cos[static_cast<size_t>(j) * half + i];
          sin_p[i] = -rope->query_sin[static_cast<size_t>(j) * half + i];
        }
        RotatePairs(cos_p, sin_p, x, d);
      }
    }
    // 2. mean and covariance.
    std::fill(mu.begin(), mu.end(), 0.0);
    for (int j = 0; j < n; ++j) {
      for (int c = 0; c < d; ++c) mu[c] += pre[static_cast<size_t>(j) * d + c] / n;
    }
    std::fill(sigma.begin(), sigma.end(), 0.0);
    for (int j = 0; j < n; ++j) {
      const double* x = &pre[static_cast<size_t>(j) * d];
      for (int a = 0; a < d; ++a) {
        for (int b = 0; b < d; ++b) sigma[static_cast<size_t>(a) * d + b] += (x[a] - mu[a]) * (x[b] - mu[b]) / n;
      }
    }
    // 3. mu' = R mu; Sigma' = R Sigma R^T (rotate every column, then every row).
    RotatePairs(c_bar, s_bar, mu.data(), d);
    std::vector<double> column(d);
    for (int b = 0; b < d; ++b) {
      for (int a = 0; a < d; ++a) column[a] = sigma[static_cast<size_t>(a) * d + b];
      RotatePairs(c_bar, s_bar, column.data(), d);
      for (int a = 0; a < d; ++a) sigma[static_cast<size_t>(a) * d + b] = column[a];
    }
    for (int a = 0; a < d; ++a) RotatePairs(c_bar, s_bar, &sigma[static_cast<size_t>(a) * d], d);
    // 4-5. expected logits, softmax over the candidates, weighted by ||v||.
    double max_logit = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < m; ++i) {
      const float* k = rows.key(i);
      double mean = 0.0, quad = 0.0;
      for (int a = 0; a < d; ++a) {
        mean += mu[a] * k[a];
        double row = 0.0;
        for (int b = 0; b < d; ++b) row += sigma[static_cast<size_t>(a) * d + b] * k[b];
        quad += k[a] * row;
      }
      logits[i] = mean / std::sqrt(static_cast<double>(d)) + quad / (2.0 * d);
      max_logit = std::max(max_logit, logits[i]);
    }
    double sum = 0.0;
    for (int i = 0; i < m; ++i) sum += (logits[i] = std::exp(logits[i] - max_logit));
    for (int i = 0; i < m; ++i) scores[i] += logits[i] / sum * value_norms[i];
  }
  return scores;
}

ReducedEntries ExpectedAttentionReduce(const ExpectedAttentionOptions& options, const QueryRows& own,
                                       const TokenRows& rows) {
  return KeepTopRows(rows, ExpectedAttentionScores(options, own, rows), options.keep);
}

}  // namespace kvspan::kvcache::reducers
