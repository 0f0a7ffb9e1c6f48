// GrpcTokenSink: a decode::TokenSink that queues the decode worker's events for the gRPC
// handler thread of one Generate call, which writes them to the stream. The decode worker
// never waits on the network; the handler never holds the lock across a write.
// Thread-safe.
#ifndef KVSPAN_FRONTEND_GRPC_TOKEN_SINK_H_
#define KVSPAN_FRONTEND_GRPC_TOKEN_SINK_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "decode/token_sink.h"
#include "kvspan/v1/serving.pb.h"

namespace kvspan::frontend {

class GrpcTokenSink final : public decode::TokenSink {
 public:
  // One event for the stream: a message to write, or the end (OK after Finished, or the
  // error that ends the call).
  struct Event {
    std::optional<v1::GenerateResponse> message;
    std::optional<absl::Status> end;
    std::optional<decode::SequenceStarted> started;    // with the Started message
    std::optional<decode::SequenceFinished> finished;  // with the Finished message
  };

  void OnStarted(const decode::SequenceStarted& started) override;
  void OnTokens(absl::Span<const int32_t> ids, absl::string_view text) override;
  void OnFinished(const decode::SequenceFinished& finished) override;
  void OnError(const absl::Status& status) override;
  bool cancelled() const override { return cancelled_.load(std::memory_order_relaxed); }

  // The client went away: the decode worker drops the sequence at its next step.
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  // The next event, waiting up to `timeout`; nullopt on timeout.
  std::optional<Event> Next(std::chrono::milliseconds timeout);

  // A message a remote decode worker streamed for this sequence (kvspan frontend): queued
  // as the event the local worker's On* call would have made, with its structs (Finished's
  // output ids are the ids of the Tokens messages before it). Call OnError for the end of a
  // stream that did not finish.
  void OnRemoteMessage(const v1::GenerateResponse& message);

 private:
  void Push(Event event);

  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> remote_ids_ ABSL_GUARDED_BY(mu_);  // OnRemoteMessage's Tokens so far
};

// Writes `sink`'s events to a client until the sequence ends and returns how it ended:
// `write` takes each message (false: the client has gone, which cancels the sequence and
// waits for the worker to let go); `cancelled` (may be null) is polled while nothing
// arrives; `on_event` (may be null) sees every event first and may rewrite it (e.g. a
// session that could not be saved replaces Finished by an error). The result is OK after
// Finished was written, Cancelled when the client went away, else the worker's error.
absl::Status RelayToClient(GrpcTokenSink& sink, const std::function<bool()>& cancelled,
                           const std::function<bool(const v1::GenerateResponse&)>& write,
                           const std::function<void(GrpcTokenSink::Event&)>& on_event);

// The wire form of a finish reason.
v1::FinishReason ToProto(model::FinishReason reason);

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_GRPC_TOKEN_SINK_H_
