#include "kvcache/reducers/razor.h"

#include <cmath>
#include <vector>

namespace kvspan::kvcache::reducers {

ReducedEntries RazorReduce(const SinksWindowOptions& options, const SpanContext& ctx, HeadRole role,
                           const TokenRows& rows) {
  const int dim = rows.head_dim;
  ReducedEntries out;
  out.head_dim = dim;
  std::vector<double> key(dim, 0.0), value(dim, 0.0);
  int num_dropped = 0;
  int32_t last_dropped = 0;
  for (int i = 0; i < rows.size(); ++i) {
    if (role == HeadRole::kRetrieval || InSinksOrWindow(options, ctx, rows.positions[i])) {
      out.AppendRow(rows, i);
      continue;
    }
    ++num_dropped;
    last_dropped = rows.positions[i];
    for (int d = 0; d < dim; ++d) {
      key[d] += rows.key(i)[d];
      value[d] += rows.value(i)[d];
    }
  }
  if (num_dropped > 0) {
    std::vector<float> key_f(dim), value_f(dim);
    for (int d = 0; d < dim; ++d) {
      key_f[d] = static_cast<float>(key[d] / num_dropped);
      value_f[d] = static_cast<float>(value[d] / num_dropped);
    }
    out.Append(last_dropped, static_cast<float>(std::log(num_dropped)), key_f.data(),
               value_f.data());
    out.SortByPosition();
  }
  return out;
}

}  // namespace kvspan::kvcache::reducers
