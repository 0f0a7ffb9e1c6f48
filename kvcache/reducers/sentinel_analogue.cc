#include "kvcache/reducers/sentinel_analogue.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvspan::kvcache::reducers {

ReducedEntries SentinelAnalogueReduce(int num_entries, const TokenRows& rows) {
  const int dim = rows.head_dim;
  const int m = rows.size();
  const int k = std::min(num_entries, m);
  ReducedEntries out;
  out.head_dim = dim;
  std::vector<float> key(dim), value(dim);
  for (int c = 0; c < k; ++c) {
    const int begin = static_cast<int>(int64_t{c} * m / k);
    const int end = static_cast<int>(int64_t{c + 1} * m / k);
    for (int d = 0; d < dim; ++d) {
      double ks = 0.0, vs = 0.0;
      for (int j = begin; j < end; ++j) {
        ks += rows.key(j)[d];
        vs += rows.value(j)[d];
      }
      key[d] = static_cast<float>(ks / (end - begin));
      value[d] = static_cast<float>(vs / (end - begin));
    }
    out.Append(rows.positions[end - 1], static_cast<float>(std::log(end - begin)), key.data(),
               value.data());
  }
  return out;
}

}  // namespace kvspan::kvcache::reducers
