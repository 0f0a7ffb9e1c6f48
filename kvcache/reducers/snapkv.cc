#include "kvcache/reducers/snapkv.h"

#include <algorithm>
#include <cmath>
#include <limits>


namespace kvspan::kvcache::reducers {

std::vector<double> SnapKvScores(const SnapKvOptions& options, const QueryRows& obs,
                                 const TokenRows& rows) {
  const int m = rows.size();
  const int d = rows.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> votes(m, 0.0);
  std::vector<double> logits(m);
  for (int j = 0; j < obs.num_tokens(); ++j) {
    for (int h = 0; h < obs.group; ++h) {
      const float* q = obs.row(j, h);
      double max_logit = -std::numeric_limits<double>::infinity();
      for (int i = 0; i < m; ++i) {
        const float* k = rows.key(i);
        double dot = 0.0;
        for (int c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * k[c];
        logits[i] = dot * scale;
        max_logit = std::max(max_logit, logits[i]);
      }
      double sum = 0.0;
      for (int i = 0; i < m; ++i) sum += (logits[i] = std::exp(logits[i] - max_logit));
      for (int i = 0; i < m; ++i) votes[i] += logits[i] / sum;
    }
  }
  const int half = std::max(options.pool, 1) / 2;
  std::vector<double> pooled(m);
  for (int i = 0; i < m; ++i) {
    double best = votes[i];
    for (int t = std::max(0, i - half); t <= std::min(m - 1, i + half); ++t) best = std::max(best, votes[t]);
    pooled[i] = best;
  }
  return pooled;
}

ReducedEntries SnapKvReduce(const SnapKvOptions& options, const QueryRows& obs, const TokenRows& rows) {
  return KeepTopRows(rows, SnapKvScores(options, obs, rows), options.keep);
}

}  // namespace kvspan::kvcache::reducers
