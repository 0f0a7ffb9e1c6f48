#include "kvcache/reducers/kvmerger.h"

#include <cmath>

namespace kvspan::kvcache::reducers {

std::vector<std::pair<int, int>> KvMergerRuns(const KvMergerOptions& options,
                                              const TokenRows& rows) {
  std::vector<std::pair<int, int>> runs;
  const int m = rows.size();
  int begin = 0;
  for (int i = 0; i < m; ++i) {
    const bool linked =
        i + 1 < m && rows.positions[i + 1] == rows.positions[i] + 1 &&
        Cosine(rows.key(i), rows.key(i + 1), rows.head_dim) >= options.similarity_threshold;
    if (!linked) {
      runs.emplace_back(begin, i + 1);
      begin = i + 1;
    }
  }
  return runs;
}

int KvMergerPivot(const TokenRows& rows, int begin, int end) {
  int pivot = begin;
  double best = -1e300;
  for (int i = begin; i < end; ++i) {
    double sum = 0.0;
    for (int j = begin; j < end; ++j) {
      if (j != i) sum += Cosine(rows.key(i), rows.key(j), rows.head_dim);
    }
    if (sum > best) {
      best = sum;
      pivot = i;
    }
  }
  return pivot;
}

ReducedEntries KvMergerReduce(const KvMergerOptions& options, const TokenRows& rows) {
  const int dim = rows.head_dim;
  ReducedEntries out;
  out.head_dim = dim;
  std::vector<double> key(dim), value(dim);
  std::vector<float> key_f(dim), value_f(dim);
  for (const auto& [begin, end] : KvMergerRuns(options, rows)) {
    if (end - begin == 1) {
      out.AppendRow(rows, begin);
      continue;
    }
    const int pivot = KvMergerPivot(rows, begin, end);
    std::fill(key.begin(), key.end(), 0.0);
    std::fill(value.begin(), value.end(), 0.0);
    double weight_sum = 0.0;
    for (int j = begin; j < end; ++j) {
      double dist2 = 0.0;
      for (int d = 0; d < dim; ++d) {
        const double diff = static_cast<double>(rows.key(j)[d]) - rows.key(pivot)[d];
        dist2 += diff * diff;
      }
      const double w = std::exp(-dist2 / (2.0 * options.sigma * options.sigma));
      weight_sum += w;
      for (int d = 0; d < dim; ++d) {
        key[d] += w * rows.key(j)[d];
        value[d] += w * rows.value(j)[d];
      }
    }
    for (int d = 0; d < dim; ++d) {
      key_f[d] = static_cast<float>(key[d] / weight_sum);
      value_f[d] = static_cast<float>(value[d] / weight_sum);
    }
    out.Append(rows.positions[pivot], static_cast<float>(std::log(end - begin)), key_f.data(),
               value_f.data());
  }
  return out;
}

}  // namespace kvspan::kvcache::reducers
