// PendingTokens: the per-layer bookkeeping of a KvCache's uncommitted tokens, one piece of
// code for every cache layout. A forward step of n tokens appends n tokens to each layer
// (AppendAndAttend, any layer order), and Commit(n) is allowed only when every layer took
// exactly n since the last Commit or Truncate:
//
//   pending_.Append(layer, n);                       // in AppendAndAttend
//   RETURN_IF_ERROR(pending_.Check(n, "MyCache"));   // in Commit, before any change
//   ... make the n tokens visible ...
//   pending_.Clear();                                // after Commit, and in Truncate
//
// Not thread-safe (owned by one cache, which has one caller at a time).
#ifndef KVSPAN_MODEL_PENDING_TOKENS_H_
#define KVSPAN_MODEL_PENDING_TOKENS_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvspan::model {

class PendingTokens {
 public:
  // REQUIRES: num_layers >= 0 (a cache's Create has checked it).
  explicit PendingTokens(int num_layers) : counts_(num_layers, 0) {}

  // `layer` took n new tokens; they replace that layer's earlier pending tokens (appending
  // to a layer again before Commit re-runs that layer's step). REQUIRES: layer in range.
  void Append(int layer, int n) { counts_[layer] = n; }

  // OK when every layer took exactly n tokens since the last Clear; otherwise
  // FailedPrecondition "<cache_name>: Commit(n) but layer l has k pending tokens", naming
  // the first layer that did not.
  absl::Status Check(int n, absl::string_view cache_name) const;

  // Nothing pending (after a Commit, and in Truncate).
  void Clear();

  int num_layers() const { return static_cast<int>(counts_.size()); }
  // Tokens `layer` took since the last Clear. REQUIRES: layer in range.
  int count(int layer) const { return counts_[layer]; }

 private:
  std::vector<int> counts_;  // [num_layers]
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_PENDING_TOKENS_H_
