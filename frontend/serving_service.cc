#include "frontend/serving_service.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "frontend/grpc_token_sink.h"
#include "transport/store_counters.h"
#include "proto/deadline.h"
#include "proto/status_conversion.h"

namespace kvspan::frontend {
namespace {

using proto::ToGrpcStatus;

}  // namespace

absl::StatusOr<model::GenerationOptions> GenerationOptionsOf(const v1::GenerateRequest& r, int default_max_tokens) {
  model::GenerationOptions o;
  const v1::SamplingParams& s = r.sampling();
  o.sampling.temperature = s.has_temperature() ? s.temperature() : 1.0;
  o.sampling.top_k = s.has_top_k() ? s.top_k() : 0;
  o.sampling.top_p = s.has_top_p() ? s.top_p() : 1.0;
  o.sampling.seed = s.has_seed() ? s.seed() : 0;
  RETURN_IF_ERROR(model::ValidateSamplingOptions(o.sampling));
  o.max_tokens = r.has_max_tokens() ? r.max_tokens() : default_max_tokens;
  if (o.max_tokens < 0) return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ", o.max_tokens));
  o.stop_strings.assign(r.stop().begin(), r.stop().end());
  for (const std::string& stop : o.stop_strings) {
    if (stop.empty()) return absl::InvalidArgumentError("a stop string is empty");
  }
  o.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
  o.ignore_eos = r.ignore_eos();
  return o;
}

absl::StatusOr<std::unique_ptr<ServingService>> ServingService::Create(const ServingOptions& options,
                                                                      const ServingParts& parts) {
  std::unique_ptr<ServingService> service(new ServingService(options, parts));
  absl::StatusOr<std::shared_ptr<const kvcache::CachePolicy>> policy = service->PolicyFor(options.default_policy);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--policy: ", policy.status().message()));
  }
  service->default_policy_ = *policy;
  return service;
}

absl::StatusOr<std::shared_ptr<const kvcache::CachePolicy>> ServingService::PolicyFor(const std::string& text) {
  if (text.empty() && default_policy_ != nullptr) return default_policy_;
  return policies_.Get(text);
}

absl::Status ServingService::BeginTurn(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!turns_in_flight_.insert(session_id).second) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session_id, " has a turn in progress; send the next turn after it ends"));
  }
  return absl::OkStatus();
}

void ServingService::EndTurn(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  turns_in_flight_.erase(session_id);
}

absl::StatusOr<decode::SequenceHandoff> ServingService::Prepare(const v1::GenerateRequest& request,
                                                                decode::Clock::time_point deadline,
                                                                std::optional<prefill::Session>* session) {
  decode::SequenceHandoff h;
  h.arrival = decode::Clock::now();
  h.deadline = deadline;
  ASSIGN_OR_RETURN(h.generation, GenerationOptionsOf(request, options_.default_max_tokens));
  h.tenant = request.tenant();
  if (!request.session_id().empty()) {
    ASSIGN_OR_RETURN(session->emplace(), sessions_->Get(request.session_id()));
    prefill::Session& record = **session;
    ASSIGN_OR_RETURN(h.policy, PolicyFor(record.policy));
    if (!request.policy().empty()) {
      ASSIGN_OR_RETURN(std::shared_ptr<const kvcache::CachePolicy> asked, PolicyFor(request.policy()));
      if (asked->canonical() != h.policy->canonical()) {
        return absl::InvalidArgumentError(absl::StrCat("session ", record.id, " uses policy ", h.policy->canonical(),
                                                       "; the request asks for ", asked->canonical()));
      }
    }
    h.session_id = record.id;
    h.tenant = record.tenant;
    h.tokens = record.tokens;
  } else {
    ASSIGN_OR_RETURN(h.policy, PolicyFor(request.policy()));
  }
  const size_t history = h.tokens.size();
  const bool empty = request.prompt_case() == v1::GenerateRequest::PROMPT_NOT_SET ||
                     (request.has_token_ids() && request.token_ids().ids_size() == 0) ||
                     (request.prompt_case() == v1::GenerateRequest::kText && request.text().empty());
  if (empty) return absl::InvalidArgumentError("the prompt is empty: set text or token_ids");
  if (request.has_token_ids()) {
    const int vocab = config_.vocab_size;
    for (int i = 0; i < request.token_ids().ids_size(); ++i) {
      const int32_t id = request.token_ids().ids(i);
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " at index ", i, " is outside the vocabulary [0, ", vocab, ")"));
      }
      h.tokens.push_back(id);
    }
  } else {
    // bos only at the start of a sequence, never in the middle of a session's history.
    const std::vector<int32_t> ids =
        history == 0 ? tokenizer_->EncodeForGeneration(request.text()) : tokenizer_->Encode(request.text());
    h.tokens.insert(h.tokens.end(), ids.begin(), ids.end());
  }
  const int context_tokens = config_.max_position_embeddings;
  if (static_cast<int64_t>(h.tokens.size()) > context_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", h.tokens.size(), " tokens",
                                                   history > 0 ? absl::StrCat(" (", history, " of session history)") : "",
                                                   ", more than the model's context of ", context_tokens));
  }
  std::lock_guard<std::mutex> lock(mu_);
  h.request_id = request.request_id().empty() ? absl::StrCat("req-", ++next_request_) : request.request_id();
  return h;
}

grpc::Status ServingService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (grpc::Status auth = CheckGrpcCall(api_keys_, *context); !auth.ok()) return auth;
  GenerateHooks hooks;
  hooks.deadline = proto::SteadyDeadline(*context);
  hooks.cancelled = [context] { return context->IsCancelled(); };
  hooks.write = [writer](const v1::GenerateResponse& message) { return writer->Write(message); };
  return ToGrpcStatus(Run(*request, hooks));
}

absl::Status ServingService::Run(const v1::GenerateRequest& request, const GenerateHooks& hooks) {
  const auto start = std::chrono::steady_clock::now();
  RequestRecord record;
  const absl::Status status = Serve(request, hooks, &record);
  if (metrics_ != nullptr) {
    record.code = status.code();
    record.e2e_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics_->RecordRequest(record);
  }
  return status;
}

absl::Status ServingService::Serve(const v1::GenerateRequest& request, const GenerateHooks& hooks,
                                   RequestRecord* record) {
  std::optional<prefill::Session> session;
  absl::StatusOr<decode::SequenceHandoff> handoff = Prepare(request, hooks.deadline, &session);
  if (!handoff.ok()) return handoff.status();
  if (session.has_value()) RETURN_IF_ERROR(BeginTurn(session->id));
  const std::string session_id = session.has_value() ? session->id : std::string();
  std::vector<int32_t> prompt = handoff->tokens;  // the session's new history starts with it
  const std::shared_ptr<const kvcache::CachePolicy> policy = handoff->policy;
  record->policy = policy->canonical();
  if (session.has_value()) {
    handoff->use_resident = backend_->HasResident(session_id, handoff->policy->canonical());
  }
  auto sink = std::make_shared<GrpcTokenSink>();
  handoff->sink = sink;
  backend_->Submit(*std::move(handoff));

  const absl::Status end = RelayToClient(*sink, hooks.cancelled, hooks.write, [&](GrpcTokenSink::Event& event) {
    if (event.started.has_value()) record->started = event.started;
    if (event.finished.has_value()) record->finished = event.finished;
    if (event.finished.has_value() && session.has_value()) {
      // The session advances before the client hears the turn is over, so its next turn
      // sees this one: acknowledged means the store has it.
      session->tokens = std::move(prompt);
      session->tokens.insert(session->tokens.end(), event.finished->output_ids.begin(),
                             event.finished->output_ids.end());
      // The turn's spans reach the store first: a restarted server finds them.
      backend_->FlushStore(*policy, session->tenant);
      absl::Status s = sessions_->Update(*session).status();
      if (!s.ok()) {
        LOG(WARNING) << "frontend: session " << session_id << " not advanced: " << s;
        event.message.reset();
        event.end = absl::UnavailableError(absl::StrCat("the turn ran but session ", session_id,
                                                        " could not be saved: ", s.message()));
      }
    }
  });
  if (session.has_value()) EndTurn(session_id);
  return end;
}

grpc::Status ServingService::OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                                         v1::OpenSessionResponse* response) {
  if (grpc::Status auth = CheckGrpcCall(api_keys_, *context); !auth.ok()) return auth;
  if (request->idle_timeout_ms() < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("idle_timeout_ms must be >= 0, got ", request->idle_timeout_ms())));
  }
  absl::StatusOr<std::shared_ptr<const kvcache::CachePolicy>> policy = PolicyFor(request->policy());
  if (!policy.ok()) return ToGrpcStatus(policy.status());
  const int64_t timeout = request->idle_timeout_ms() > 0 ? request->idle_timeout_ms() : options_.default_idle_timeout_ms;
  absl::StatusOr<prefill::Session> record =
      sessions_->Open((*policy)->canonical(), options_.span_tokens, timeout, request->tenant());
  if (!record.ok()) return ToGrpcStatus(record.status());
  response->set_session_id(record->id);
  response->set_policy((*policy)->canonical());
  response->set_idle_timeout_ms(timeout);
  return grpc::Status::OK;
}

grpc::Status ServingService::CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                                          v1::CloseSessionResponse* response) {
  if (grpc::Status auth = CheckGrpcCall(api_keys_, *context); !auth.ok()) return auth;
  absl::Status s = sessions_->Close(request->session_id());
  backend_->DropResident(request->session_id());
  return ToGrpcStatus(s);
}

grpc::Status ServingService::ServerInfo(grpc::ServerContext* context, const v1::ServerInfoRequest* request,
                                        v1::ServerInfoResponse* response) {
  if (grpc::Status auth = CheckGrpcCall(api_keys_, *context); !auth.ok()) return auth;
  const model::ModelConfig& c = config_;
  const BackendStats stats = backend_->Stats();
  response->set_model_name(options_.model_name);
  response->set_model_fingerprint(c.fingerprint);
  response->set_context_tokens(c.max_position_embeddings);
  response->set_vocab_size(c.vocab_size);
  response->set_span_tokens(options_.span_tokens);
  response->set_default_policy(default_policy_->canonical());
  response->set_kv_budget_bytes(stats.kv_budget_bytes);
  response->set_kv_bytes_in_use(stats.kv_bytes_in_use);
  response->set_running_sequences(stats.running);
  response->set_waiting_requests(stats.waiting);
  response->set_max_queue(stats.max_queue);
  response->set_resident_sessions(stats.resident_sessions);
  response->set_store(options_.store_description);
  transport::ToProto(stats.store, response->mutable_store_counters());
  return grpc::Status::OK;
}

}  // namespace kvspan::frontend
