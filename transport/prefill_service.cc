#include "transport/prefill_service.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "kvcache/span_format.h"
#include "proto/deadline.h"
#include "proto/status_conversion.h"
#include "transport/sequence_checks.h"
#include "transport/store_counters.h"
#include "transport/tail_blob.h"

namespace kvspan::transport {
namespace {

constexpr std::chrono::milliseconds kPollInterval(50);
// How long a SPAN_DELIVERY_DEVICE call waits for the decode worker to join the pair.
constexpr std::chrono::seconds kDeviceLinkJoinTimeout(30);

// Queues a prefill-only sequence's spans (serialized on the worker's thread) and its end
// for the handler thread that writes them.
class ShipSink final : public decode::TokenSink {
 public:
  struct Event {
    int span_index = -1;   // >= 0: a span
    std::string span_bytes;
    std::optional<decode::SequencePrefilled> prefilled;
    std::optional<absl::Status> error;
  };
  void OnStarted(const decode::SequenceStarted&) override {}
  void OnTokens(absl::Span<const int32_t>, absl::string_view) override {}
  void OnFinished(const decode::SequenceFinished&) override {
    Event e;
    e.error = absl::InternalError("a prefill-only sequence finished generating");
    Push(std::move(e));
  }
  void OnError(const absl::Status& status) override {
    Event e;
    e.error = status;
    Push(std::move(e));
  }
  void OnSpan(int index, const kvcache::Span& span) override {
    Event e;
    e.span_index = index;
    e.span_bytes = kvcache::SerializeSpan(span);
    Push(std::move(e));
  }
  void OnPrefilled(decode::SequencePrefilled prefilled) override {
    Event e;
    e.prefilled = std::move(prefilled);
    Push(std::move(e));
  }
  bool cancelled() const override { return cancelled_.load(std::memory_order_relaxed); }
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }

  std::optional<Event> Next(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
    Event e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

 private:
  void Push(Event e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

// Cancels the sequence and waits until the worker lets go of the sink (it reports
// Cancelled, or the prefill completes first).
void DrainUntilReleased(ShipSink& sink) {
  sink.Cancel();
  while (true) {
    std::optional<ShipSink::Event> e = sink.Next(kPollInterval);
    if (e.has_value() && (e->error.has_value() || e->prefilled.has_value())) return;
  }
}

// A call that ends early with `status` (the device link failed): the prefill is stopped.
absl::Status Abandon(ShipSink& sink, absl::Status status) {
  DrainUntilReleased(sink);
  return status;
}

}  // namespace

PrefillService::PrefillService(const model::ModelConfig& config, prefill::PrefillWorker* prefill,
                               decode::DecodeWorker* worker, prefill::StoreRouter* stores,
                               const PrefillServiceOptions& options)
    : config_(config), prefill_(prefill), worker_(worker), stores_(stores), options_(options),
      policies_(config, options.span_tokens) {}

grpc::Status PrefillService::Prefill(grpc::ServerContext* context, const v1::PrefillRequest* request,
                                     grpc::ServerWriter<v1::PrefillChunk>* writer) {
  in_flight_.fetch_add(1);
  const absl::Status status = Run(context, *request, writer);
  in_flight_.fetch_sub(1);
  if (!status.ok()) LOG(INFO) << "prefill: request " << request->request_id() << " ends: " << status;
  return proto::ToGrpcStatus(status);
}

absl::Status PrefillService::Run(grpc::ServerContext* context, const v1::PrefillRequest& request,
                                 grpc::ServerWriter<v1::PrefillChunk>* writer) {
  RETURN_IF_ERROR(CheckPeer(config_, options_.span_tokens, request.model_fingerprint(), request.span_tokens()));
  const std::vector<int32_t> tokens(request.tokens().begin(), request.tokens().end());
  RETURN_IF_ERROR(CheckTokens(config_, tokens));
  ASSIGN_OR_RETURN(std::shared_ptr<const kvcache::CachePolicy> policy, policies_.Get(request.policy()));
  if (policy->canonical() != request.policy()) {
    return absl::InvalidArgumentError(absl::StrCat("policy \"", request.policy(), "\" is not canonical (\"",
                                                   policy->canonical(), "\")"));
  }
  const int S = options_.span_tokens;
  const int num_spans = policy->dense() ? 0 : static_cast<int>(tokens.size()) / S;
  const bool over_device = request.span_delivery() == v1::SPAN_DELIVERY_DEVICE;
  if (over_device && options_.device_links == nullptr) {
    return absl::FailedPreconditionError(
        "this prefill worker has no device span transport (it runs on the CPU, or kvspan was built without NCCL)");
  }
  if (request.span_delivery() != v1::SPAN_DELIVERY_GRPC && !over_device) {
    return absl::InvalidArgumentError(absl::StrCat("unknown span delivery ", request.span_delivery()));
  }

  auto sink = std::make_shared<ShipSink>();
  decode::SequenceHandoff h;
  h.request_id = request.request_id();
  h.tenant = request.tenant();
  h.policy = policy;
  h.tokens = tokens;
  h.prefill_only = true;
  h.generation.sampling.temperature = 0;
  h.generation.max_tokens = 1;
  h.deadline = proto::SteadyDeadline(*context);
  h.sink = sink;
  prefill_->Submit(std::move(h));

  v1::PrefillChunk chunk;
  v1::PrefillHeader* header = chunk.mutable_header();
  header->set_model_fingerprint(config_.fingerprint);
  header->set_policy(policy->canonical());
  header->set_span_tokens(S);
  header->set_num_layers(config_.num_layers);
  header->set_num_kv_heads(config_.num_kv_heads);
  header->set_head_dim(config_.head_dim);
  header->set_num_tokens(static_cast<int>(tokens.size()));
  header->set_num_spans(num_spans);
  bool gone = !writer->Write(chunk);
  std::unique_ptr<DeviceSpanLink> link;
  if (over_device && !gone) {
    // After the header, so the receiver has checked it before it waits for the pair.
    absl::StatusOr<std::unique_ptr<DeviceSpanLink>> joined = options_.device_links->Join(
        request.device_pair_id(), DeviceLinkRole::kSender, std::chrono::steady_clock::now() + kDeviceLinkJoinTimeout);
    if (!joined.ok()) return Abandon(*sink, joined.status());
    link = *std::move(joined);
  }
  while (true) {
    std::optional<ShipSink::Event> e = sink->Next(kPollInterval);
    if (!e.has_value()) {
      if (gone || context->IsCancelled()) sink->Cancel();  // the worker ends it with Cancelled
      continue;
    }
    if (e->error.has_value()) return *e->error;
    if (gone) {  // drain until the worker lets go
      if (e->prefilled.has_value()) return absl::CancelledError("the decode worker went away");
      continue;
    }
    if (e->span_index >= 0) {
      const int64_t n = spans_total_.fetch_add(1) + 1;
      if (options_.test_corrupt_span > 0 && n == options_.test_corrupt_span) {
        LOG(WARNING) << "prefill: test hook: flipping a byte of span " << e->span_index << " of request "
                     << request.request_id();
        e->span_bytes[e->span_bytes.size() / 2] ^= 0x40;
      }
      v1::PrefillChunk span;
      span.mutable_span()->set_index(e->span_index);
      const auto size_bytes = static_cast<int64_t>(e->span_bytes.size());
      span_bytes_sent_.fetch_add(size_bytes);
      if (link != nullptr) {
        // The digest first, on this device, then the chunk that announces the bytes, then
        // the bytes (the receiver posts its receive when it reads the chunk).
        absl::StatusOr<uint64_t> digest = link->Stage(e->span_bytes);
        if (!digest.ok()) return Abandon(*sink, digest.status());
        span.mutable_span()->set_size_bytes(size_bytes);
        span.mutable_span()->set_digest(*digest);
        if (!writer->Write(span)) {
          gone = true;
        } else if (absl::Status sent = link->SendStaged(); !sent.ok()) {
          return Abandon(*sink, sent);
        }
      } else {
        span.mutable_span()->set_span(std::move(e->span_bytes));
        if (!writer->Write(span)) gone = true;
      }
      if (options_.test_stall_after_spans > 0 && n >= options_.test_stall_after_spans) {
        LOG(WARNING) << "prefill: test hook: stalling after " << n << " spans";
        while (!context->IsCancelled()) std::this_thread::sleep_for(kPollInterval);
        gone = true;
      }
      continue;
    }
    const decode::SequencePrefilled& p = *e->prefilled;
    const std::string blob = SerializeTail(p.rows, p.logits);
    for (size_t at = 0; at < blob.size() && !gone;) {
      const size_t n = std::min<size_t>(options_.tail_part_bytes, blob.size() - at);
      v1::PrefillChunk part;
      v1::TailPart* tail = part.mutable_tail();
      tail->set_data(blob.substr(at, n));
      at += n;
      tail->set_last(at == blob.size());
      if (tail->last()) {
        tail->set_store_prompt_tokens(p.store_prompt_tokens);
        tail->set_prefill_ms(p.prefill_ms);
      }
      if (!writer->Write(part)) gone = true;
    }
    if (gone) return absl::CancelledError("the decode worker went away");
    tail_bytes_sent_.fetch_add(static_cast<int64_t>(blob.size()));
    sequences_sent_.fetch_add(1);
    return absl::OkStatus();
  }
}

grpc::Status PrefillService::Info(grpc::ServerContext*, const v1::WorkerInfoRequest*, v1::WorkerInfo* response) {
  const decode::DecodeWorkerStats d = worker_->Stats();
  response->set_role("prefill");
  response->set_model_fingerprint(config_.fingerprint);
  response->set_span_tokens(options_.span_tokens);
  response->set_kv_budget_bytes(worker_->options().kv_budget_bytes);
  response->set_kv_bytes_in_use(d.kv_bytes_in_use);
  response->set_running_sequences(in_flight_.load());
  response->set_waiting_requests(d.waiting + prefill_->pending());
  response->set_max_queue(worker_->options().max_queue);
  ToProto(stores_->TotalStats(), response->mutable_store_counters());
  v1::TransportCounters* t = response->mutable_transport();
  t->set_sequences_sent(sequences_sent_.load());
  t->set_spans_sent(spans_total_.load());
  t->set_span_bytes_sent(span_bytes_sent_.load());
  t->set_tail_bytes_sent(tail_bytes_sent_.load());
  return grpc::Status::OK;
}

}  // namespace kvspan::transport
