// TokenSink: where the decode worker streams one sequence's results — the request's start,
// its tokens as their text becomes final, and exactly one end (finished or an error). The
// frontend implements it over a gRPC stream. Implementations must be thread-safe: the
// decode worker's scheduler thread calls On* while the frontend's thread reads and may
// cancel. On* calls never block on the network (they enqueue).
#ifndef KVSPAN_DECODE_TOKEN_SINK_H_
#define KVSPAN_DECODE_TOKEN_SINK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvcache/span.h"
#include "model/generator.h"
#include "model/kv_cache.h"

namespace kvspan::decode {

struct SequenceStarted {
  std::string request_id;
  std::string session_id;
  std::string policy;               // canonical, or "dense"
  int prompt_tokens = 0;            // tokens the model sees before generating
  int store_prompt_tokens = 0;      // of those, loaded from the cache store
  int resident_prompt_tokens = 0;   // of those, reused from the decode worker's memory
  int computed_prompt_tokens = 0;   // of those, computed by this request
};

struct SequenceFinished {
  model::FinishReason finish_reason = model::FinishReason::kMaxTokens;
  int prompt_tokens = 0;
  int cached_prompt_tokens = 0;     // store + resident
  int completion_tokens = 0;
  std::vector<int32_t> output_ids;  // generated ids (a final stop token not included)
  std::string text;                 // the whole generated text
  int64_t kv_bytes = 0;             // measured KvCache::memory_bytes() at the end
  double kv_bytes_per_token = 0;    // kv_bytes / tokens in the cache
  double queue_ms = 0;
  double ttft_ms = 0;
  double prefill_ms = 0;
  double decode_ms = 0;
  double store_load_ms = 0;
  int preemptions = 0;
};

// The end of a prefill-only sequence (SequenceHandoff::prefill_only).
struct SequencePrefilled {
  model::DenseRows rows;      // the cache's dense rows after its spans
  std::vector<float> logits;  // the last prompt token's logits
  int num_spans = 0;          // spans reported through OnSpan
  int store_prompt_tokens = 0;
  double prefill_ms = 0;      // admission to the end of the prompt
};

class TokenSink {
 public:
  virtual ~TokenSink() = default;
  // Once, when the decode worker admits the sequence (before any token).
  virtual void OnStarted(const SequenceStarted& started) = 0;
  // Generated ids and the text that became final with them (may be empty).
  virtual void OnTokens(absl::Span<const int32_t> ids, absl::string_view text) = 0;
  // The end: exactly one of these, once; nothing is called after it.
  virtual void OnFinished(const SequenceFinished& finished) = 0;
  virtual void OnError(const absl::Status& status) = 0;
  // Prefill-only sequences: span `index` of the cache exists (called in index order on the
  // worker's thread; must not block). `span` is borrowed for the call.
  virtual void OnSpan(int index, const kvcache::Span& span) {}
  // Prefill-only sequences: their end when the prompt is computed (instead of OnFinished).
  virtual void OnPrefilled(SequencePrefilled prefilled) {}
  // True once the client has gone (cancelled, disconnected): the worker drops the sequence
  // at its next step and calls OnError(Cancelled).
  virtual bool cancelled() const = 0;
};

}  // namespace kvspan::decode

#endif  // KVSPAN_DECODE_TOKEN_SINK_H_
