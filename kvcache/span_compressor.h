// The seam between a KV cache and a compression policy: DenseSpanView (one span's dense
// K/V, borrowed), SpanCompressor (turns it into a Span) and PolicySpanCompressor (runs a
// policy string through CompressSpan). CompressedKvCache calls a SpanCompressor at each
// Commit that completes a span; serving code shares one compressor per policy.
#ifndef KVSPAN_KVCACHE_SPAN_COMPRESSOR_H_
#define KVSPAN_KVCACHE_SPAN_COMPRESSOR_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kvcache/compress.h"
#include "kvcache/policy.h"
#include "kvcache/span.h"

namespace kvspan::kvcache {

// The dense K (post-RoPE) and V of exactly one span's S tokens, all layers, borrowed for
// the duration of a Compress call: element (layer l, kv head h, token t, channel d) as in
// DenseKvView, t in [0, S).
struct DenseSpanView {
  SpanGeometry geometry;       // span_tokens = S
  int32_t first_position = 0;  // position of token 0 of the span
  int32_t span_index = 0;      // first_position / S
  DenseKvView kv;
  // The queries of the span's tokens and of the committed tokens after it (token t of the
  // view = position first_position + t), when the compressor's query_needs() asks for
  // them; null otherwise.
  const DenseQueryView* queries = nullptr;
};

// Turns one span's dense K/V into a Span. The policy engine plugs in here. A compressor
// must read only the view (causality) and return a span whose header geometry,
// first_position and span_index equal the view's. Implementations document their own
// thread safety; CompressedKvCache calls Compress from its caller's thread.
class SpanCompressor {
 public:
  virtual ~SpanCompressor() = default;
  virtual absl::StatusOr<Span> Compress(const DenseSpanView& view) = 0;
  // The queries Compress reads. With observation_tokens = w > 0 (query-aware, snapkv) the
  // cache compresses a span only once w committed tokens follow it, and passes the queries
  // of every committed tail token; the last w of them are the observation window.
  virtual QueryNeeds query_needs() const { return {}; }
};

// The first policy: every token kept, one codec (Span::FromDense). Thread-safe.
// Compresses with a policy (kvcache/policy.h) through CompressSpan (kvcache/compress.h):
// a codec-only policy such as "int4(g=32)" keeps every token; reducers shrink the span.
// Thread-safe (immutable).
class PolicySpanCompressor final : public SpanCompressor {
 public:
  struct Options {
    Policy policy;                  // from ParsePolicy; its canonical string goes in each header
    std::string model_fingerprint;  // copied to each span header
  };
  explicit PolicySpanCompressor(Options options) : options_(std::move(options)) {}
  // Errors of CompressSpan: Unimplemented for a query-aware or not yet built stage,
  // InvalidArgument for values the codec rejects.
  absl::StatusOr<Span> Compress(const DenseSpanView& view) override;
  QueryNeeds query_needs() const override { return QueryNeedsOf(options_.policy); }
  // The policy and fingerprint every span's header carries (a GPU cache encodes codec-only
  // and sinks / window policies on the device from them: gpu/gpu_kv_cache.h).
  const Options& options() const { return options_; }

 private:
  const Options options_;
};

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SPAN_COMPRESSOR_H_
