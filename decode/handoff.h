// SequenceHandoff: what a prefill worker hands a decode worker for one request — the
// tokens the model must see, the compressed spans of their cached prefix, the generation
// options and where the results go. The decode worker computes the uncached rest (chunked
// prefill inside its batch), then decodes. transport/ moves handoffs between workers.
#ifndef KVSPAN_DECODE_HANDOFF_H_
#define KVSPAN_DECODE_HANDOFF_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "decode/token_sink.h"
#include "kvcache/cache_policy.h"
#include "kvcache/span.h"
#include "model/generator.h"
#include "model/kv_cache.h"

namespace kvspan::decode {

using Clock = std::chrono::steady_clock;

// A sequence another worker prefilled (transport/): what the decode worker continues from
// without computing anything.
struct ShippedPrefill {
  model::DenseRows rows;       // the dense rows after the spans of SequenceHandoff::prefix
  std::vector<float> logits;   // the last prompt token's logits, [vocab_size]
  int store_prompt_tokens = 0; // of the prompt, loaded from the cache store by the prefill worker
  double prefill_ms = 0;       // the prefill worker's time on it (store load included)
};

struct SequenceHandoff {
  std::string request_id;
  std::string session_id;  // empty: not a session turn
  std::string tenant;      // the cache-store namespace's tenant salt
  std::shared_ptr<const kvcache::CachePolicy> policy;  // non-null
  // Every token the model sees before generating (a session's history, then the turn).
  std::vector<int32_t> tokens;
  // Spans 0 .. k-1 of `tokens`, loaded from the cache store (empty on a miss).
  std::vector<kvcache::Span> prefix;
  double store_load_ms = 0;
  // The session's cache is resident in the decode worker: reuse it instead of `prefix`
  // (falls back to a store reload if it is gone by admission).
  bool use_resident = false;
  model::GenerationOptions generation;
  // Prefill only (a prefill worker's sequence, transport/): the worker computes the prompt,
  // reports each span of the cache to sink->OnSpan as soon as it exists (loaded ones at
  // admission, then each as it is compressed), and ends with sink->OnPrefilled (the dense
  // rows after the spans and the last token's logits) instead of generating.
  bool prefill_only = false;
  // Set when another worker prefilled the sequence: `prefix` holds every full span of the
  // prompt and the worker samples the first token from shipped->logits at admission.
  std::optional<ShippedPrefill> shipped;
  Clock::time_point arrival = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();
  std::shared_ptr<TokenSink> sink;  // non-null
};

}  // namespace kvspan::decode

#endif  // KVSPAN_DECODE_HANDOFF_H_
