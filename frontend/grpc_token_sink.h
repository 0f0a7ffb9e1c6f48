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
#include <mutex>
#include <optional>
#include <variant>

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

 private:
  void Push(Event event);

  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
};

// The wire form of a finish reason.
v1::FinishReason ToProto(model::FinishReason reason);

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_GRPC_TOKEN_SINK_H_
