// Attention sinks plus a recent window, per span.
// Paper: StreamingLLM — Xiao et al., "Efficient Streaming Language Models with Attention
// Sinks", arXiv 2309.17453.
//
// StreamingLLM keeps the first few tokens of the sequence (the sinks) and a window of the
// most recent tokens. Per span, that means:
//   - sinks(n): the tokens whose SEQUENCE position is < n. Only span 0 (or the first
//     spans, when n > S) contains them; later spans have none.
//   - window(n): the last n tokens of EACH span (positions >= first_position + S - n).
//     The sequence-level recent window — the tokens after the last complete span — is
//     never compressed: the cache keeps that tail uncompressed, so StreamingLLM's recent
//     window is always present at decode time. A policy adds window(n) only if it also
//     wants each stored span to keep its own n most recent tokens; window(0) keeps none.
// In a policy, tokens selected by sinks/window are kept verbatim; the other reducer (if
// any) sees only the remaining tokens; with no other reducer the rest are dropped.
//
// Pure and thread-safe.
#ifndef KVSPAN_KVCACHE_REDUCERS_SINKS_WINDOW_H_
#define KVSPAN_KVCACHE_REDUCERS_SINKS_WINDOW_H_

#include <cstdint>

#include "kvcache/reducers/entries.h"

namespace kvspan::kvcache::reducers {

struct SinksWindowOptions {
  int num_sinks = 0;      // keep sequence positions [0, num_sinks)
  int window_tokens = 0;  // keep the last window_tokens tokens of each span
};

// True when the token at sequence `position` of the span `ctx` is a sink or in the window.
bool InSinksOrWindow(const SinksWindowOptions& options, const SpanContext& ctx, int32_t position);

}  // namespace kvspan::kvcache::reducers

#endif  // KVSPAN_KVCACHE_REDUCERS_SINKS_WINDOW_H_
