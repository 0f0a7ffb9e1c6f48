#include "cachestore/types.h"

#include "absl/strings/str_cat.h"

namespace kvspan::cachestore {

absl::Status ValidateLookupRequest(const SpanKey& namespace_key, size_t num_keys) {
  if (namespace_key.IsZero()) {
    return absl::InvalidArgumentError("namespace key is all zero (unset namespace)");
  }
  if (num_keys > kMaxLookupKeys) {
    return absl::InvalidArgumentError(absl::StrCat("Lookup of ", num_keys,
                                                   " keys, over the limit of ", kMaxLookupKeys));
  }
  return absl::OkStatus();
}

}  // namespace kvspan::cachestore
