// SequenceHandoff: what a prefill worker hands a decode worker for one request — the
// tokens the model must see, the compressed spans of their cached prefix, the generation
// options and where the results go. The decode worker computes the uncached rest (chunked
// prefill inside its batch), then decodes. transport/ moves handoffs between workers.
#ifndef KVSPAN_DECODE_HANDOFF_H_
#define KVSPAN_DECODE_HANDOFF_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decode/token_sink.h"
#include "kvcache/cache_policy.h"
#include "kvcache/span.h"
#include "model/generator.h"

namespace kvspan::decode {

using Clock = std::chrono::steady_clock;

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
  Clock::time_point arrival = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();
  std::shared_ptr<TokenSink> sink;  // non-null
};

}  // namespace kvspan::decode

#endif  // KVSPAN_DECODE_HANDOFF_H_
