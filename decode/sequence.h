// Sequence: the decode worker's state of one request — its tokens, its KV cache, its
// generation state (model::GenerationState: sampler, stops, streamed text), the cache-store
// keys of its spans and its timings. Owned by one thread at a time (the scheduler while
// running; the loader while it reloads). Not thread-safe.
#ifndef KVSPAN_DECODE_SEQUENCE_H_
#define KVSPAN_DECODE_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "cachestore/span_key.h"
#include "decode/backend.h"
#include "decode/handoff.h"
#include "model/generation_state.h"
#include "prefill/span_store.h"

namespace kvspan::decode {

struct Sequence {
  // What the prefill side handed over; `handoff.tokens` is moved into `tokens`.
  SequenceHandoff handoff;
  // Prompt, then every generated token that is part of the output. The cache holds
  // tokens[0, num_fed); the next step feeds tokens[num_fed, ...).
  std::vector<int32_t> tokens;
  int num_prompt = 0;
  int num_fed = 0;
  std::unique_ptr<BackendCache> cache;    // null while waiting or reloading
  int capacity_tokens = 0;                // positions the cache must hold (prompt + max_tokens)
  bool done = false;                      // finished or failed: leaves the running set
  std::optional<model::GenerationState> state;
  std::shared_ptr<prefill::SpanStore> store;  // null: nothing is stored (dense, query-aware)
  // Keys of the full spans of `tokens` computed so far (key i names span i).
  std::vector<cachestore::SpanKey> keys;
  int num_spans_stored = 0;  // spans of the cache already in the store (loaded or put)
  int num_spans_reported = 0;  // prefill-only: spans already given to the sink's OnSpan
  // Shipped: attached with the prompt computed elsewhere; `logits` hold its last token's.
  bool continue_from_logits = false;
  double shipped_prefill_ms = 0;  // the prefill worker's time on a shipped sequence
  std::vector<float> logits;
  int64_t admission = 0;     // admission order: higher is younger
  bool started = false;      // OnStarted sent
  int store_prompt_tokens = 0;
  int resident_prompt_tokens = 0;
  int preemptions = 0;
  double store_load_ms = 0;
  Clock::time_point admitted{};
  Clock::time_point first_token{};
  Clock::time_point prefill_done{};

  // Number of tokens the next step feeds: all remaining up to `limit`, cut at the next span
  // boundary for a compressed cache (S = span_tokens), at `dense_chunk` for a dense one.
  int NextChunk(int limit, int dense_chunk) const;
  bool prefilling() const { return num_fed < num_prompt; }
  // The key of span `index` of `tokens`, extending `keys` as needed.
  // REQUIRES: store != null, (index + 1) * S <= tokens.size().
  const cachestore::SpanKey& KeyOf(int index);
};

}  // namespace kvspan::decode

#endif  // KVSPAN_DECODE_SEQUENCE_H_
