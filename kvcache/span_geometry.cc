#include "kvcache/span_geometry.h"

#include "absl/strings/str_cat.h"

namespace kvspan::kvcache {
namespace {

absl::Status CheckRange(const char* name, int value, int max) {
  if (value < 1 || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("span geometry: ", name, " = ", value, " is outside [1, ", max, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGeometry(const SpanGeometry& geometry) {
  absl::Status s = CheckRange("num_layers", geometry.num_layers, kMaxLayers);
  if (s.ok()) s = CheckRange("num_kv_heads", geometry.num_kv_heads, kMaxKvHeads);
  if (s.ok()) s = CheckRange("head_dim", geometry.head_dim, kMaxHeadDim);
  if (s.ok()) s = CheckRange("span_tokens", geometry.span_tokens, kMaxSpanTokens);
  return s;
}

}  // namespace kvspan::kvcache
