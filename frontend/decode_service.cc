#include "frontend/decode_service.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "frontend/grpc_token_sink.h"
#include "frontend/serving_service.h"
#include "proto/deadline.h"
#include "proto/status_conversion.h"
#include "transport/prefill_client.h"
#include "transport/sequence_checks.h"
#include "transport/store_counters.h"

namespace kvspan::frontend {
namespace {

// Unreserves on every path out of the transfer.
class Reservation {
 public:
  Reservation(decode::DecodeWorker* worker, int64_t bytes) : worker_(worker), bytes_(bytes) {}
  ~Reservation() { Release(); }
  void Release() {
    if (bytes_ > 0) worker_->Unreserve(bytes_);
    bytes_ = 0;
  }

 private:
  decode::DecodeWorker* const worker_;
  int64_t bytes_;
};

}  // namespace

DecodeService::DecodeService(const model::ModelConfig& config, decode::DecodeWorker* decode,
                             prefill::PrefillWorker* local_prefill, prefill::StoreRouter* stores,
                             const DecodeServiceOptions& options)
    : config_(config), decode_(decode), local_prefill_(local_prefill), stores_(stores), options_(options),
      policies_(config, options.span_tokens) {}

std::shared_ptr<v1::Prefill::Stub> DecodeService::StubFor(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  auto stub = std::shared_ptr<v1::Prefill::Stub>(
      v1::Prefill::NewStub(transport::WorkerChannel(address, options_.peer_credentials)));
  stubs_.emplace(address, stub);
  return stub;
}

grpc::Status DecodeService::Generate(grpc::ServerContext* context, const v1::DecodeRequest* request,
                                     grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const absl::Status status = Run(context, *request, writer);
  if (!status.ok()) LOG(INFO) << "decode: request " << request->request().request_id() << " ends: " << status;
  return proto::ToGrpcStatus(status);
}

bool DecodeService::PullFromPrefillWorkers(grpc::ServerContext* context, const v1::DecodeRequest& request,
                                           decode::SequenceHandoff* h) {
  v1::PrefillRequest pr;
  pr.set_request_id(h->request_id);
  pr.set_tenant(h->tenant);
  pr.set_policy(h->policy->canonical());
  pr.mutable_tokens()->Assign(h->tokens.begin(), h->tokens.end());
  pr.set_model_fingerprint(config_.fingerprint);
  pr.set_span_tokens(options_.span_tokens);
  const int n = request.prefill_workers_size();
  for (int i = 0; i < n; ++i) {
    const std::string& address = request.prefill_workers(i);
    // The child call carries the frontend's deadline and is cancelled with its call.
    std::unique_ptr<grpc::ClientContext> child = grpc::ClientContext::FromServerContext(*context);
    absl::StatusOr<transport::PulledPrefill> pulled =
        transport::PullPrefill(*StubFor(address), child.get(), pr, config_, *h->policy, options_.device_links);
    if (pulled.ok()) {
      counters_.sequences_received.fetch_add(1);
      counters_.spans_received.fetch_add(static_cast<int64_t>(pulled->spans.size()));
      counters_.span_bytes_received.fetch_add(pulled->span_bytes);
      counters_.tail_bytes_received.fetch_add(pulled->tail_bytes);
      counters_.pull_us.fetch_add(static_cast<int64_t>(pulled->transfer_ms * 1e3));
      counters_.remote_prefill_us.fetch_add(static_cast<int64_t>(pulled->prefill_ms * 1e3));
      h->prefix = std::move(pulled->spans);
      decode::ShippedPrefill& shipped = h->shipped.emplace();
      shipped.rows = std::move(pulled->rows);
      shipped.logits = std::move(pulled->logits);
      shipped.store_prompt_tokens = pulled->store_prompt_tokens;
      shipped.prefill_ms = pulled->transfer_ms;
      return true;
    }
    (pulled.status().code() == absl::StatusCode::kDataLoss ? counters_.bad_transfers : counters_.failed_transfers)
        .fetch_add(1);
    LOG(WARNING) << "decode: request " << h->request_id << ": the prefill from " << address
                 << " failed: " << pulled.status();
    if (context->IsCancelled() || decode::Clock::now() >= h->deadline) return false;
    if (i + 1 < n) counters_.prefill_retries.fetch_add(1);
  }
  return false;
}

absl::Status DecodeService::Run(grpc::ServerContext* context, const v1::DecodeRequest& request,
                                grpc::ServerWriter<v1::GenerateResponse>* writer) {
  RETURN_IF_ERROR(
      transport::CheckPeer(config_, options_.span_tokens, request.model_fingerprint(), request.span_tokens()));
  const v1::GenerateRequest& g = request.request();
  decode::SequenceHandoff h;
  h.arrival = decode::Clock::now();
  h.deadline = proto::SteadyDeadline(*context);
  h.request_id = g.request_id();
  h.session_id = g.session_id();
  h.tenant = g.tenant();
  h.tokens.assign(g.token_ids().ids().begin(), g.token_ids().ids().end());
  RETURN_IF_ERROR(transport::CheckTokens(config_, h.tokens));
  ASSIGN_OR_RETURN(h.policy, policies_.Get(g.policy()));
  ASSIGN_OR_RETURN(h.generation, GenerationOptionsOf(g, options_.default_max_tokens));
  auto sink = std::make_shared<GrpcTokenSink>();
  h.sink = sink;
  const std::shared_ptr<const kvcache::CachePolicy> policy = h.policy;

  if (request.use_resident() && !h.session_id.empty() &&
      decode_->ResidentTokens(h.session_id, policy->canonical()) > 0) {
    counters_.resident_turns.fetch_add(1);
    h.use_resident = true;
    local_prefill_->Submit(std::move(h));
  } else {
    const int capacity = static_cast<int>(std::min<int64_t>(config_.max_position_embeddings,
                                                            int64_t{static_cast<int>(h.tokens.size())} +
                                                                h.generation.max_tokens));
    const int64_t planned = policy->PlannedBytes(capacity);
    RETURN_IF_ERROR(decode_->Reserve(planned, h.deadline, [context] { return context->IsCancelled(); }));
    Reservation reservation(decode_, planned);
    const bool shipped = PullFromPrefillWorkers(context, request, &h);
    if (context->IsCancelled()) return absl::CancelledError("the frontend cancelled the request");
    if (decode::Clock::now() >= h.deadline) return absl::DeadlineExceededError("the request's deadline passed");
    reservation.Release();  // the sequence's own admission plans for it from here
    if (shipped) {
      RETURN_IF_ERROR(decode_->Submit(std::move(h)));
    } else {
      counters_.local_prefills.fetch_add(1);
      LOG(WARNING) << "decode: request " << h.request_id << ": no prefill worker delivered; prefilling here";
      local_prefill_->Submit(std::move(h));
    }
  }
  const std::string session_id = g.session_id();
  const std::string tenant = g.tenant();
  return RelayToClient(
      *sink, [context] { return context->IsCancelled(); },
      [writer](const v1::GenerateResponse& message) { return writer->Write(message); },
      [&](GrpcTokenSink::Event& event) {
        // A session turn's spans reach the store before the frontend hears it is over.
        if (event.finished.has_value() && !session_id.empty()) {
          if (auto store = stores_->For(*policy, tenant); store != nullptr) store->Flush();
        }
      });
}

grpc::Status DecodeService::DropSession(grpc::ServerContext*, const v1::DropSessionRequest* request,
                                        v1::DropSessionResponse*) {
  decode_->DropResident(request->session_id());
  return grpc::Status::OK;
}

grpc::Status DecodeService::Info(grpc::ServerContext*, const v1::WorkerInfoRequest*, v1::WorkerInfo* response) {
  const decode::DecodeWorkerStats d = decode_->Stats();
  response->set_role("decode");
  response->set_model_fingerprint(config_.fingerprint);
  response->set_span_tokens(options_.span_tokens);
  response->set_kv_budget_bytes(decode_->options().kv_budget_bytes);
  response->set_kv_bytes_in_use(d.kv_bytes_in_use);
  response->set_running_sequences(d.running);
  response->set_waiting_requests(d.waiting + local_prefill_->pending());
  response->set_max_queue(decode_->options().max_queue);
  response->set_resident_sessions(d.resident_sessions);
  transport::ToProto(stores_->TotalStats(), response->mutable_store_counters());
  v1::TransportCounters* t = response->mutable_transport();
  t->set_sequences_received(counters_.sequences_received.load());
  t->set_spans_received(counters_.spans_received.load());
  t->set_span_bytes_received(counters_.span_bytes_received.load());
  t->set_tail_bytes_received(counters_.tail_bytes_received.load());
  t->set_bad_transfers(counters_.bad_transfers.load());
  t->set_failed_transfers(counters_.failed_transfers.load());
  t->set_prefill_retries(counters_.prefill_retries.load());
  t->set_local_prefills(counters_.local_prefills.load());
  t->set_resident_turns(counters_.resident_turns.load());
  t->set_pull_us_total(counters_.pull_us.load());
  t->set_remote_prefill_us_total(counters_.remote_prefill_us.load());
  return grpc::Status::OK;
}

}  // namespace kvspan::frontend
