// The shape of one span: how many layers and KV heads it covers, the head dimension and
// the span length S (tokens per span, fixed per cache namespace).
// Plain value type; thread-compatible.
#ifndef KVSPAN_KVCACHE_SPAN_GEOMETRY_H_
#define KVSPAN_KVCACHE_SPAN_GEOMETRY_H_

#include <cstdint>

#include "absl/status/status.h"

namespace kvspan::kvcache {

// Upper bounds a valid geometry respects. They keep every size computed from a parsed
// header far from integer overflow (docs/span-format.md, "Validation").
inline constexpr int kMaxLayers = 1024;
inline constexpr int kMaxKvHeads = 1024;
inline constexpr int kMaxHeadDim = 4096;
inline constexpr int kMaxSpanTokens = 65536;

struct SpanGeometry {
  int num_layers = 0;    // [1, kMaxLayers]
  int num_kv_heads = 0;  // [1, kMaxKvHeads]
  int head_dim = 0;      // [1, kMaxHeadDim]
  int span_tokens = 0;   // S, [1, kMaxSpanTokens]

  int num_heads_total() const { return num_layers * num_kv_heads; }
  friend bool operator==(const SpanGeometry&, const SpanGeometry&) = default;
};

// OK when every field is in its range; InvalidArgument naming the first bad field.
absl::Status ValidateGeometry(const SpanGeometry& geometry);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SPAN_GEOMETRY_H_
