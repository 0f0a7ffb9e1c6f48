// PendingTokens: the per-layer bookkeeping of a KvCache's uncommitted tokens and of its
// two-phase commit (model/kv_cache.h), one piece of code for every cache layout. A forward
// step of n tokens appends n tokens to each layer (AppendAndAttend, any layer order);
// PrepareCommit(n) is allowed only when every layer took exactly n since the last Commit
// or Truncate, and Commit(n) skips the preparation when PrepareCommit(n) already succeeded:
//
//   pending_.Append(layer, n);                       // in AppendAndAttend
//   RETURN_IF_ERROR(pending_.Check(n, "MyCache"));   // in PrepareCommit, before any work
//   ... the cache's fallible work, into staged state ...
//   pending_.MarkPrepared(n);                        // PrepareCommit succeeded
//   if (!pending_.prepared(n)) RETURN_IF_ERROR(PrepareCommit(n));  // in Commit
//   ... make the n tokens visible (cannot fail) ...
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
  // to a layer again before Commit re-runs that layer's step). Cancels a preparation: the
  // staged work no longer matches the pending tokens. REQUIRES: layer in range.
  void Append(int layer, int n) {
    counts_[layer] = n;
    prepared_ = kNotPrepared;
  }

  // OK when every layer took exactly n tokens since the last Clear; otherwise
  // FailedPrecondition "<cache_name>: Commit(n) but layer l has k pending tokens", naming
  // the first layer that did not.
  absl::Status Check(int n, absl::string_view cache_name) const;

  // PrepareCommit(n) succeeded. REQUIRES: Check(n, ...).ok().
  void MarkPrepared(int n) { prepared_ = n; }
  // Whether PrepareCommit(n) succeeded since the last Append or Clear.
  bool prepared(int n) const { return prepared_ == n; }

  // Nothing pending and nothing prepared (after a Commit, and in Truncate).
  void Clear();

  // Whether any layer took tokens since the last Clear.
  bool any() const {
    for (int c : counts_) {
      if (c != 0) return true;
    }
    return false;
  }

  int num_layers() const { return static_cast<int>(counts_.size()); }
  // Tokens `layer` took since the last Clear. REQUIRES: layer in range.
  int count(int layer) const { return counts_[layer]; }

 private:
  static constexpr int kNotPrepared = -1;
  std::vector<int> counts_;  // [num_layers]
  int prepared_ = kNotPrepared;  // n of the last successful PrepareCommit, or kNotPrepared
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_PENDING_TOKENS_H_
