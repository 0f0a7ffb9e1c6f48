// ServingMetrics: the Prometheus metrics of one serving node (names in vLLM's style with
// the kvspan: prefix; docs/architecture.md, "Metrics"). Per-request values are recorded
// once, at the request's end, by ServingService::Run (RecordRequest); gauges and the
// totals other components already keep (ServingBackend::Stats) are
// read at scrape time, in Render.
//
// Thread-safe. RecordRequest takes no lock of the node's workers and does not block.
#ifndef KVSPAN_FRONTEND_SERVING_METRICS_H_
#define KVSPAN_FRONTEND_SERVING_METRICS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "common/metrics.h"
#include "decode/token_sink.h"
#include "frontend/serving_backend.h"

namespace kvspan::frontend {

// What one call (gRPC Generate or HTTP) did.
struct RequestRecord {
  absl::StatusCode code = absl::StatusCode::kOk;  // the call's final status
  std::string policy;                             // canonical; empty if it failed validation
  std::optional<decode::SequenceStarted> started;
  std::optional<decode::SequenceFinished> finished;
  double e2e_seconds = 0;  // from the handler's start to its end
};

class ServingMetrics {
 public:
  // The components read at scrape time; borrowed, and must outlive every Render call
  // (the node stops its HTTP server before it stops its workers).
  struct Sources {
    const ServingBackend* backend = nullptr;
  };
  explicit ServingMetrics(const Sources& sources);

  // Counts one request's end: success by finish reason or failure by gRPC code name; its
  // tokens and histogram samples when it finished (a finished turn whose session could not
  // be saved counts its tokens and a failure).
  void RecordRequest(const RequestRecord& record);

  // The exposition text (GET /metrics).
  std::string Render() const { return registry_.Render(); }

 private:
  void Collect();

  const Sources sources_;
  MetricsRegistry registry_;
  Histogram& ttft_;
  Histogram& tpot_;
  Histogram& e2e_;
  Counter& prompt_tokens_;
  Family<Counter>& prompt_tokens_cached_;
  Counter& generation_tokens_;
  Family<Counter>& success_;
  Family<Counter>& failure_;
  Family<Histogram>& span_bytes_per_token_;
  Gauge& running_;
  Gauge& waiting_;
  Gauge& kv_usage_;
  Gauge& kv_bytes_;
  Gauge& resident_sessions_;
  Counter& preemptions_;
  Counter& store_errors_;
  Family<Counter>& recomputed_spans_;
  Counter& store_lookups_;
  Counter& store_spans_looked_up_;
  Counter& store_spans_hit_;
  Counter& store_spans_loaded_;
  Counter& store_bytes_loaded_;
  Family<Counter>& store_puts_;
  Counter& store_bytes_put_;
  Counter& store_bad_spans_deleted_;
  Family<Counter>& span_transfer_bytes_;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_SERVING_METRICS_H_
