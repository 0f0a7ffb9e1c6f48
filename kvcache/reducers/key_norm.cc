#include "kvcache/reducers/key_norm.h"

#include <vector>

namespace kvspan::kvcache::reducers {

namespace {

// Lower key norm = higher score.
std::vector<double> NegatedKeyNorms(const TokenRows& rows) {
  std::vector<double> scores(rows.size());
  for (int i = 0; i < rows.size(); ++i) scores[i] = -SquaredNorm(rows.key(i), rows.head_dim);
  return scores;
}

}  // namespace

std::vector<int> LowestKeyNormRows(const TokenRows& rows, int keep) {
  return TopScoreRows(NegatedKeyNorms(rows), keep);
}

ReducedEntries KeyNormReduce(const TokenRows& rows, double keep_ratio) {
  return KeepTopRows(rows, NegatedKeyNorms(rows), keep_ratio);
}

}  // namespace kvspan::kvcache::reducers
