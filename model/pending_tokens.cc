#include "model/pending_tokens.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvspan::model {

absl::Status PendingTokens::Check(int n, absl::string_view cache_name) const {
  for (size_t l = 0; l < counts_.size(); ++l) {
    if (counts_[l] != n) {
      return absl::FailedPreconditionError(absl::StrCat(cache_name, ": Commit(", n, ") but layer ", l, " has ",
                                                        counts_[l], " pending tokens"));
    }
  }
  return absl::OkStatus();
}

void PendingTokens::Clear() {
  std::fill(counts_.begin(), counts_.end(), 0);
  prepared_ = kNotPrepared;
}

}  // namespace kvspan::model
