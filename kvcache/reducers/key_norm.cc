#include "kvcache/reducers/key_norm.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvspan::kvcache::reducers {

int KeepCount(double keep_ratio, int m) {
  const double want = std::ceil(keep_ratio * m - 1e-9);
  return static_cast<int>(std::clamp(want, 0.0, static_cast<double>(m)));
}

std::vector<int> LowestKeyNormRows(const TokenRows& rows, int keep) {
  const int m = rows.size();
  std::vector<double> norms(m);
  for (int i = 0; i < m; ++i) norms[i] = SquaredNorm(rows.key(i), rows.head_dim);
  std::vector<int> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return norms[a] < norms[b]; });
  order.resize(std::clamp(keep, 0, m));
  std::sort(order.begin(), order.end());
  return order;
}

ReducedEntries KeyNormReduce(const TokenRows& rows, double keep_ratio) {
  ReducedEntries out;
  out.head_dim = rows.head_dim;
  for (int i : LowestKeyNormRows(rows, KeepCount(keep_ratio, rows.size()))) {
    out.AppendRow(rows, i);
  }
  return out;
}

}  // namespace kvspan::kvcache::reducers
