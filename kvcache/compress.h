// The policy engine: compresses the dense K/V of ONE span into a Span with a Policy.
//
// Per (layer, KV head): the span's S tokens (positions first_position + t) are split into
// protected tokens (sinks/window, kept verbatim) and candidates; the main reducer maps the
// candidates to entries (keynorm, kvmerger, razor, sentinel-analogue; see
// kvcache/reducers/); with reducers but no main reducer the candidates are dropped, with
// no reducers at all every token is kept. The entries, sorted by position, are encoded
// with the policy's codec (one block), or with mikv (two blocks, EncodeMixedHead).
//
// Causality: only tokens [0, S) of `kv` are read, so compressing span i never looks at
// tokens after its end; a stored span is valid for every continuation.
//
// Thread-safe (pure).
#ifndef KVSPAN_KVCACHE_COMPRESS_H_
#define KVSPAN_KVCACHE_COMPRESS_H_

#include "absl/status/statusor.h"
#include "kvcache/policy.h"
#include "kvcache/span.h"

namespace kvspan::kvcache {

// Returns the compressed span. Its header is `header` with `policy` replaced by
// policy.ToString() (so every output names its policy, e.g. "sentinel-analogue(...)").
// `header.geometry` gives the shape of `kv` ([layers][kv_heads][S][head_dim] via strides).
// Errors:
//   Unimplemented   — a query-aware reducer (snapkv: decode-side only, not here),
//                     expected-attn, or a sharing stage (minicache, pod);
//   InvalidArgument — a Policy that ParsePolicy would not produce (hand-built, missing
//                     parameters), a bad header, null K/V or bad strides, a retrieval
//                     head outside the geometry, a canonical policy longer than
//                     kMaxLabelBytes, or values the codec rejects (EncodeBlock).
absl::StatusOr<Span> CompressSpan(const Policy& policy, const SpanHeader& header,
                                  const DenseKvView& kv);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_COMPRESS_H_
