// The policy engine: compresses the dense K/V of ONE span into a Span with a Policy.
//
// Per (layer, KV head): the span's S tokens (positions first_position + t) are split into
// protected tokens (sinks/window, kept verbatim) and candidates; the main reducer maps the
// candidates to entries (keynorm, kvmerger, razor, sentinel-analogue; see
// kvcache/reducers/); with reducers but no main reducer the candidates are dropped, with
// no reducers at all every token is kept. The entries, sorted by position, are encoded
// with the policy's codec (one block), or with mikv (two blocks, EncodeMixedHead).
// A sharing stage (minicache, pod; kvcache/sharing.h) replaces the per-head pass: it
// composes only with a codec-only policy (no reducers, not mikv) and encodes every layer
// from the dense rows, writing shared blocks in the upper layers of its pairs / groups.
//
// Causality: only tokens [0, S) of `kv` are read, so compressing span i never looks at
// tokens after its end; a stored span is valid for every continuation. The one exception
// is the query-aware snapkv, which votes with the queries of an observation window after
// the span: its policies are not query_agnostic() and serve one sequence's decode-side
// working set only (never the cache store). expected-attn reads the queries of the span's
// own tokens [0, S) (and the model's RoPE frequencies), so it stays causal.
//
// Thread-safe (pure).
#ifndef KVSPAN_KVCACHE_COMPRESS_H_
#define KVSPAN_KVCACHE_COMPRESS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvcache/policy.h"
#include "kvcache/span.h"

namespace kvspan::kvcache {

// Queries of the span's tokens and of the tokens after it, borrowed: element (layer l, token
// t, query head h, channel d) at q[l * layer_stride + t * token_stride + h * head_dim + d],
// post-RoPE, token t at position first_position + t, for t in [0, num_tokens): tokens
// [0, S) are the span's own, [S, num_tokens) come after it. snapkv's observation window is
// the last `obs` of them, and must lie wholly after the span (num_tokens >= S + obs).
struct DenseQueryView {
  const float* q = nullptr;
  int64_t layer_stride = 0;  // floats
  int64_t token_stride = 0;  // floats, >= num_heads * head_dim
  int num_heads = 0;         // query heads, a multiple of the geometry's num_kv_heads
  int num_tokens = 0;        // >= S for expected-attn, >= S + obs for snapkv
  // The model's rotate-half RoPE frequencies ([head_dim / 2]), or empty for no RoPE.
  absl::Span<const float> rope_inv_freq;
};

// Queries a policy reads: none, the span's own (expected-attn) or an observation window
// of `observation_tokens` after the span (snapkv).
struct QueryNeeds {
  bool own = false;
  int observation_tokens = 0;
  bool any() const { return own || observation_tokens > 0; }
};
QueryNeeds QueryNeedsOf(const Policy& policy);

// The span-relative indices t in [0, span_tokens), increasing, of the tokens `policy` keeps
// verbatim in the span at `first_position`; the set depends only on the policy and the
// span's place, so it is the same for every (layer, KV head): every token for a policy
// without reducers, else the tokens its sinks / window stages protect
// (reducers::InSinksOrWindow; possibly none). With no main reducer, no sharing stage and
// a block codec (not mikv) these are exactly the entries of each head's one block in
// CompressSpan's output (entry e: position first_position + t[e], log count 0, in this
// order); a main reducer adds entries built from the other tokens. REQUIRES: `policy` as
// ParsePolicy produces it.
std::vector<int> ProtectedTokens(const Policy& policy, int32_t first_position, int span_tokens);

// Returns the compressed span. Its header is `header` with `policy` replaced by
// policy.ToString() (so every output names its policy, e.g. "sentinel-analogue(...)").
// `header.geometry` gives the shape of `kv` ([layers][kv_heads][S][head_dim] via strides).
// `queries` may be null unless QueryNeedsOf(policy).any().
// Errors:
//   FailedPrecondition — a policy that reads queries without `queries`, or with too few
//                     query tokens (see DenseQueryView), or `sentinel` (forward-pass only);
//   InvalidArgument — a Policy that ParsePolicy would not produce (hand-built, missing
//                     parameters), a bad header, null K/V or bad strides, a retrieval
//                     head outside the geometry, a canonical policy longer than
//                     kMaxLabelBytes, a sharing stage with reducers or mikv, or values
//                     the codec rejects (EncodeBlock; with sharing also merged or
//                     scaled values).
absl::StatusOr<Span> CompressSpan(const Policy& policy, const SpanHeader& header,
                                  const DenseKvView& kv, const DenseQueryView* queries = nullptr);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_COMPRESS_H_
