#include "kvcache/span_compressor.h"

namespace kvspan::kvcache {

absl::StatusOr<Span> PolicySpanCompressor::Compress(const DenseSpanView& view) {
  SpanHeader header;
  header.model_fingerprint = options_.model_fingerprint;
  header.geometry = view.geometry;
  header.first_position = view.first_position;
  header.span_index = view.span_index;
  return CompressSpan(options_.policy, header, view.kv, view.queries);  // sets header.policy
}

}  // namespace kvspan::kvcache
