// The data that token reducers read and write: the dense fp32 rows of one (layer, KV head)
// of one span, and the list of entries a reducer keeps or builds from them.
//
// A reducer is a pure function TokenRows -> ReducedEntries. It sees only the tokens it is
// given (a subset of ONE span's tokens, never later ones), so compressing span i never
// depends on tokens after the end of span i.
//
// Value types; all functions are pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_ENTRIES_H_
#define KVSPAN_KVCACHE_REDUCERS_ENTRIES_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kvcache/entry_block.h"

namespace kvspan::kvcache::reducers {

// Where the rows come from: the span's first sequence position and its length S.
struct SpanContext {
  int32_t first_position = 0;  // sequence index of the span's first token
  int span_tokens = 0;         // S
};

// Borrowed dense rows of m tokens of one head, in increasing position order.
struct TokenRows {
  int head_dim = 0;                     // D >= 1
  absl::Span<const int32_t> positions;  // [m], strictly increasing
  absl::Span<const float> keys;         // [m, D] post-RoPE
  absl::Span<const float> values;       // [m, D]

  int size() const { return static_cast<int>(positions.size()); }
  const float* key(int i) const { return keys.data() + static_cast<size_t>(i) * head_dim; }
  const float* value(int i) const { return values.data() + static_cast<size_t>(i) * head_dim; }
};

// Owned entries: (position, log_count, key row, value row). An entry standing for n
// tokens carries log_count = log n, so exp(q.k + log n) = n exp(q.k): with n identical
// keys the merged entry has exactly the softmax mass of its members.
struct ReducedEntries {
  int head_dim = 0;
  std::vector<int32_t> positions;
  std::vector<float> log_counts;
  std::vector<float> keys;    // [n, D]
  std::vector<float> values;  // [n, D]

  int size() const { return static_cast<int>(positions.size()); }
  void Append(int32_t position, float log_count, const float* key, const float* value);
  // Appends token i of `rows` unchanged (log_count 0).
  void AppendRow(const TokenRows& rows, int i);
  // Reorders entries by position (stable), as EncodeBlock requires.
  void SortByPosition();
  // A borrowed view for EncodeBlock / EncodeMixedHead; valid while *this is unchanged.
  DenseEntries view() const;
};

// Borrowed queries of the GQA group of one KV head: n query tokens x `group` query heads,
// post-RoPE, row (token j, head h) at q[(j * group + h) * head_dim].
struct QueryRows {
  int head_dim = 0;
  int group = 0;                        // query heads sharing the KV head, >= 1
  absl::Span<const int32_t> positions;  // [n] sequence positions of the query tokens
  absl::Span<const float> q;            // [n, group, D]

  int num_tokens() const { return static_cast<int>(positions.size()); }
  const float* row(int j, int h) const {
    return q.data() + (static_cast<size_t>(j) * group + h) * head_dim;
  }
};

// Number of rows a keep ratio selects out of m: ceil(keep_ratio * m), clamped to [0, m]
// (computed with a 1e-9 tolerance so 0.25 * 64 is exactly 16).
int KeepCount(double keep_ratio, int m);

// The KeepCount(keep_ratio, m) rows with the highest scores (TopScoreRows), unchanged
// (log_count 0), in position order. REQUIRES: scores.size() == rows.size().
ReducedEntries KeepTopRows(const TokenRows& rows, absl::Span<const double> scores, double keep_ratio);

// Indices of the `keep` highest scores (ties go to the lower index), returned in increasing
// index order. keep is clamped to [0, scores.size()].
std::vector<int> TopScoreRows(absl::Span<const double> scores, int keep);

// Squared L2 norm and cosine similarity of D-float rows (double accumulation). Cosine of a
// zero row is defined as 0.
double SquaredNorm(const float* x, int head_dim);
double Cosine(const float* a, const float* b, int head_dim);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_ENTRIES_H_
