#include "kvcache/reducers/entries.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvspan::kvcache::reducers {

void ReducedEntries::Append(int32_t position, float log_count, const float* key,
                            const float* value) {
  positions.push_back(position);
  log_counts.push_back(log_count);
  keys.insert(keys.end(), key, key + head_dim);
  values.insert(values.end(), value, value + head_dim);
}

void ReducedEntries::AppendRow(const TokenRows& rows, int i) {
  Append(rows.positions[i], 0.0f, rows.key(i), rows.value(i));
}

void ReducedEntries::SortByPosition() {
  std::vector<int> order(positions.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return positions[a] < positions[b]; });
  ReducedEntries sorted;
  sorted.head_dim = head_dim;
  for (int i : order) {
    sorted.Append(positions[i], log_counts[i], keys.data() + static_cast<size_t>(i) * head_dim,
                  values.data() + static_cast<size_t>(i) * head_dim);
  }
  *this = std::move(sorted);
}

DenseEntries ReducedEntries::view() const {
  return DenseEntries{head_dim, positions, log_counts, keys, values};
}

int KeepCount(double keep_ratio, int m) {
  const double want = std::ceil(keep_ratio * m - 1e-9);
  return static_cast<int>(std::clamp(want, 0.0, static_cast<double>(m)));
}

ReducedEntries KeepTopRows(const TokenRows& rows, absl::Span<const double> scores, double keep_ratio) {
  ReducedEntries out;
  out.head_dim = rows.head_dim;
  for (int i : TopScoreRows(scores, KeepCount(keep_ratio, rows.size()))) out.AppendRow(rows, i);
  return out;
}

std::vector<int> TopScoreRows(absl::Span<const double> scores, int keep) {
  const int m = static_cast<int>(scores.size());
  std::vector<int> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  order.resize(std::clamp(keep, 0, m));
  std::sort(order.begin(), order.end());
  return order;
}

double SquaredNorm(const float* x, int head_dim) {
  double s = 0.0;
  for (int d = 0; d < head_dim; ++d) s += static_cast<double>(x[d]) * x[d];
  return s;
}

double Cosine(const float* a, const float* b, int head_dim) {
  double dot = 0.0;
  for (int d = 0; d < head_dim; ++d) dot += static_cast<double>(a[d]) * b[d];
  const double norms = std::sqrt(SquaredNorm(a, head_dim) * SquaredNorm(b, head_dim));
  return norms > 0.0 ? dot / norms : 0.0;
}

}  // namespace kvspan::kvcache::reducers
