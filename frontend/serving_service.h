// ServingService: the kvspan.v1.Serving gRPC service (proto/kvspan/v1/serving.proto) of
// one node — request validation, tokenization, sessions (records in the cache store through
// prefill::SessionStore), and the stream of one Generate call fed by the decode worker.
// Run is the one pipeline every protocol shares: the gRPC Generate handler and the
// OpenAI-compatible HTTP routes (frontend/openai_routes.h) only translate to and from it.
// Validation errors are INVALID_ARGUMENT / NOT_FOUND with a message naming the problem, and
// never reach the workers. With ServingParts::api_keys, every handler first checks the
// call's key (CheckGrpcCall, frontend/api_keys.h): UNAUTHENTICATED. Thread-safe (gRPC's sync server calls it from many threads;
// each Generate handler blocks only on its own sink).
#ifndef KVSPAN_FRONTEND_SERVING_SERVICE_H_
#define KVSPAN_FRONTEND_SERVING_SERVICE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "decode/decode_worker.h"
#include "frontend/api_keys.h"
#include "frontend/serving_backend.h"
#include "frontend/serving_metrics.h"
#include "kvcache/cache_policy.h"
#include "kvspan/v1/serving.grpc.pb.h"
#include "model/config.h"
#include "model/generation_state.h"
#include "model/tokenizer.h"
#include "prefill/session_store.h"

namespace kvspan::frontend {

struct ServingOptions {
  std::string model_name;             // reported by ServerInfo
  std::string default_policy = "int4(g=32)";
  int span_tokens = 64;               // S
  int64_t default_idle_timeout_ms = int64_t{30} * 60 * 1000;
  int default_max_tokens = 128;
  std::string store_description;      // "embedded DIR" or "remote ADDR"
};

// The node's parts the service drives; every pointer is borrowed, non-null unless its
// comment says otherwise, and must outlive the service.
struct ServingParts {
  const model::ModelConfig* config = nullptr;  // the model's (the workers run the same one)
  const model::Tokenizer* tokenizer = nullptr;
  ServingBackend* backend = nullptr;
  prefill::SessionStore* sessions = nullptr;
  ServingMetrics* metrics = nullptr;  // null: nothing recorded
  const ApiKeys* api_keys = nullptr;  // null: calls need no key (no --api-key-file)
};

// How one call reaches its client, whatever the protocol. Both callbacks run on the thread
// that called Run, never while the service holds a lock.
struct GenerateHooks {
  // Bounds queueing and generation (DeadlineExceeded); max() = none.
  decode::Clock::time_point deadline = decode::Clock::time_point::max();
  // Polled every 50 ms while the call waits; true once the client has gone. Null: never.
  std::function<bool()> cancelled;
  // Delivers one message (Started, Tokens..., Finished, in that order); false when the
  // client has gone, which cancels the sequence. REQUIRES: non-null.
  std::function<bool(const v1::GenerateResponse&)> write;
};

// The generation options of a Generate request (defaults filled in, max_tokens =
// `default_max_tokens` when unset). InvalidArgument for sampling values out of range, a
// negative max_tokens or an empty stop string. Shared by every role that takes requests.
absl::StatusOr<model::GenerationOptions> GenerationOptionsOf(const v1::GenerateRequest& request,
                                                             int default_max_tokens);

class ServingService final : public v1::Serving::Service {
 public:
  // InvalidArgument when options.default_policy does not resolve.
  static absl::StatusOr<std::unique_ptr<ServingService>> Create(const ServingOptions& options,
                                                                const ServingParts& parts);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override;
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override;
  grpc::Status ServerInfo(grpc::ServerContext* context, const v1::ServerInfoRequest* request,
                          v1::ServerInfoResponse* response) override;

  // Runs one Generate call to its end: validation, the session turn, prefill and decode,
  // each message to hooks.write, the session's update (before Finished is written), one
  // RequestRecord for the metrics. Returns OK after Finished was written, else the error
  // that ended the call: validation (InvalidArgument, NotFound, FailedPrecondition for a
  // session turn in progress) before any message; ResourceExhausted, DeadlineExceeded,
  // Cancelled (the client went away), Unavailable (stopping; a session not saved) after.
  // Blocks the calling thread until then.
  absl::Status Run(const v1::GenerateRequest& request, const GenerateHooks& hooks);

  const ServingOptions& options() const { return options_; }

  // The resolved policy for `text` (empty: the default), cached. Errors of CachePolicy::Resolve.
  absl::StatusOr<std::shared_ptr<const kvcache::CachePolicy>> PolicyFor(const std::string& text);

 private:
  ServingService(const ServingOptions& options, const ServingParts& parts)
      : options_(options), config_(*parts.config), tokenizer_(parts.tokenizer), backend_(parts.backend),
        sessions_(parts.sessions), metrics_(parts.metrics), api_keys_(parts.api_keys),
        policies_(*parts.config, options.span_tokens) {}
  // Validates the request and builds its handoff (the session record, when there is one,
  // goes to *session).
  absl::StatusOr<decode::SequenceHandoff> Prepare(const v1::GenerateRequest& request,
                                                  decode::Clock::time_point deadline,
                                                  std::optional<prefill::Session>* session);
  // Run's body; fills *record with what the metrics count.
  absl::Status Serve(const v1::GenerateRequest& request, const GenerateHooks& hooks, RequestRecord* record);
  // Marks a session as having a turn in flight; FailedPrecondition if it already has one.
  absl::Status BeginTurn(const std::string& session_id);
  void EndTurn(const std::string& session_id);

  const ServingOptions options_;
  const model::ModelConfig config_;
  const model::Tokenizer* const tokenizer_;
  ServingBackend* const backend_;
  prefill::SessionStore* const sessions_;
  ServingMetrics* const metrics_;
  const ApiKeys* const api_keys_;
  kvcache::PolicyCache policies_;
  std::shared_ptr<const kvcache::CachePolicy> default_policy_;

  std::mutex mu_;
  absl::flat_hash_set<std::string> turns_in_flight_ ABSL_GUARDED_BY(mu_);
  int64_t next_request_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_SERVING_SERVICE_H_
