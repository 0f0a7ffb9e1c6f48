// SpanTransport: how a prefill worker hands a sequence (its compressed prefix spans, the
// tokens to go, the generation options, where results go) to a decode worker. This issue
// has the in-process transport (`kvspan serve`); gRPC streams and NCCL implement the same
// interface later, shipping the spans in their serialized, checksummed form.
// Implementations are thread-safe.
#ifndef KVSPAN_TRANSPORT_SPAN_TRANSPORT_H_
#define KVSPAN_TRANSPORT_SPAN_TRANSPORT_H_

#include "absl/status/status.h"
#include "decode/decode_worker.h"
#include "decode/handoff.h"

namespace kvspan::transport {

class SpanTransport {
 public:
  virtual ~SpanTransport() = default;
  // Delivers `handoff` to a decode worker. On OK the worker owns the sequence and reports
  // to its sink; on error (the decode worker's admission errors: ResourceExhausted,
  // InvalidArgument, Unavailable) the sink has not been called.
  virtual absl::Status Send(decode::SequenceHandoff handoff) = 0;
};

// Hands the sequence to a DecodeWorker in this process: no copy, no serialization (the
// spans were verified when they were parsed from the store).
class InProcessTransport final : public SpanTransport {
 public:
  // `worker` is borrowed and must outlive the transport.
  explicit InProcessTransport(decode::DecodeWorker* worker) : worker_(worker) {}
  absl::Status Send(decode::SequenceHandoff handoff) override { return worker_->Submit(std::move(handoff)); }

 private:
  decode::DecodeWorker* const worker_;
};

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_SPAN_TRANSPORT_H_
