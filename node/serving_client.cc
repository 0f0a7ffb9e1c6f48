#include "node/serving_client.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <utility>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/strings/str_cat.h"
#include "common/api_key_file.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "absl/strings/str_format.h"
#include "proto/status_conversion.h"

namespace kvspan::node {

using ::kvspan::proto::FromGrpcStatus;
namespace v1 = ::kvspan::v1;

namespace {

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const ServingClientOptions& options) {
  if (options.tls_ca_pem.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls_ca_pem;
  ssl.pem_cert_chain = options.tls_cert_pem;
  ssl.pem_private_key = options.tls_key_pem;
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServingClient>> ServingClient::Create(
    const ServingClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("no target (host:port) given");
  if (options.unary_timeout_ms <= 0) {
    return absl::InvalidArgumentError("ServingClientOptions.unary_timeout_ms must be positive");
  }
  return std::unique_ptr<ServingClient>(new ServingClient(options));
}

ServingClient::ServingClient(const ServingClientOptions& options)
    : options_(options),
      channel_(grpc::CreateChannel(options_.target, ChannelCredentials(options_))),
      stub_(v1::Serving::NewStub(channel_)) {}

absl::StatusOr<std::string> ResolveApiKey(const std::string& api_key_file) {
  if (!api_key_file.empty()) {
    absl::StatusOr<std::vector<std::string>> keys = LoadApiKeyFile(api_key_file);
    if (!keys.ok()) return keys.status();
    return keys->front();
  }
  const char* env = std::getenv("KVSPAN_API_KEY");
  return std::string(env == nullptr ? "" : env);
}

void ConnectionFlags::AddTo(FlagSet* flags) {
  flags->Add("target", &target, "host:port of the server (required)");
  flags->Add("api-key-file", &api_key_file,
             "file whose first key is sent as 'authorization: Bearer <key>'; empty = $KVSPAN_API_KEY, if set");
  flags->Add("tls-ca", &tls_ca_file, "PEM CA bundle the server's certificate must chain to (TLS)");
  flags->Add("tls-cert", &tls_cert_file, "PEM client certificate, for a server with --tls-client-ca");
  flags->Add("tls-key", &tls_key_file, "PEM private key of --tls-cert");
}

absl::StatusOr<ServingClientOptions> ConnectionFlags::ToOptions() const {
  ServingClientOptions options;
  options.target = target;
  ASSIGN_OR_RETURN(options.api_key, ResolveApiKey(api_key_file));
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!tls_cert_file.empty() && tls_ca_file.empty()) return absl::InvalidArgumentError("--tls-cert needs --tls-ca");
  if (!tls_ca_file.empty()) {
    ASSIGN_OR_RETURN(options.tls_ca_pem, ReadFile(tls_ca_file));
  }
  if (!tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(options.tls_cert_pem, ReadFile(tls_cert_file));
    ASSIGN_OR_RETURN(options.tls_key_pem, ReadFile(tls_key_file));
  }
  return options;
}

void ServingClient::Authorize(grpc::ClientContext* context) const {
  if (!options_.api_key.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
}

void ServingClient::SetUnaryDeadline(grpc::ClientContext* context) const {
  Authorize(context);
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(options_.unary_timeout_ms));
}

absl::StatusOr<GenerateResult> ServingClient::Generate(const v1::GenerateRequest& request,
                                                       int64_t timeout_ms,
                                                       const GenerateCallbacks& callbacks) const {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  auto ms_since_start = [start] {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  grpc::ClientContext context;
  Authorize(&context);
  if (timeout_ms > 0) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  }
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->Generate(&context, request);
  GenerateResult result;
  bool have_started = false, have_finished = false, have_token = false, cancelled = false;
  absl::Status protocol_error;
  v1::GenerateResponse response;
  while (!cancelled && protocol_error.ok() && reader->Read(&response)) {
    if (have_finished) {
      protocol_error = absl::InternalError("Generate stream: a message after Finished");
    } else if (response.has_started() && have_started) {
      protocol_error = absl::InternalError("Generate stream: a second Started");
    } else if (response.has_started()) {
      have_started = true;
      result.started = std::move(*response.mutable_started());
      cancelled = callbacks.on_started && !callbacks.on_started(result.started);
    } else if (!have_started) {
      protocol_error = absl::InternalError("Generate stream: a message before Started");
    } else if (response.has_tokens()) {
      if (!have_token && response.tokens().ids_size() > 0) {
        have_token = true;
        result.first_token_ms = ms_since_start();
      }
      cancelled = callbacks.on_tokens && !callbacks.on_tokens(response.tokens());
    } else if (response.has_finished()) {
      have_finished = true;
      result.finished = std::move(*response.mutable_finished());
      result.finished_ms = ms_since_start();
      if (!have_token) result.first_token_ms = result.finished_ms;
    }
  }
  // Finish() blocks until the server ends the call, so a cancelled or broken stream is
  // cancelled here first.
  if (cancelled || !protocol_error.ok()) context.TryCancel();
  const grpc::Status status = reader->Finish();
  if (cancelled) return absl::CancelledError("Generate cancelled by the client");
  if (!protocol_error.ok()) return protocol_error;
  if (!status.ok()) return FromGrpcStatus(status);
  if (!have_finished) return absl::InternalError("Generate stream ended without Finished");
  return result;
}

absl::StatusOr<v1::OpenSessionResponse> ServingClient::OpenSession(
    const v1::OpenSessionRequest& request) const {
  grpc::ClientContext context;
  SetUnaryDeadline(&context);
  v1::OpenSessionResponse response;
  if (grpc::Status s = stub_->OpenSession(&context, request, &response); !s.ok()) {
    return FromGrpcStatus(s);
  }
  return response;
}

absl::Status ServingClient::CloseSession(const std::string& session_id) const {
  grpc::ClientContext context;
  SetUnaryDeadline(&context);
  v1::CloseSessionRequest request;
  request.set_session_id(session_id);
  v1::CloseSessionResponse response;
  return FromGrpcStatus(stub_->CloseSession(&context, request, &response));
}

absl::StatusOr<v1::ServerInfoResponse> ServingClient::ServerInfo() const {
  grpc::ClientContext context;
  SetUnaryDeadline(&context);
  v1::ServerInfoResponse response;
  if (grpc::Status s = stub_->ServerInfo(&context, v1::ServerInfoRequest(), &response); !s.ok()) {
    return FromGrpcStatus(s);
  }
  return response;
}

void GenerationFlags::AddTo(FlagSet* flags) {
  flags->Add("max-tokens", &max_tokens, "tokens to generate at most");
  flags->Add("temperature", &temperature, "sampling temperature; 0 is greedy");
  flags->Add("top-k", &top_k, "sample among the k most likely tokens; 0 = all");
  flags->Add("top-p", &top_p, "sample from the smallest set of tokens with this much probability");
  flags->Add("seed", &seed, "random seed for sampling");
  flags->Add("stop", &stops, "stop string (repeatable); the text ends before it");
  flags->Add("ignore-eos", &ignore_eos, "keep generating past end-of-sequence tokens");
  flags->Add("policy", &policy,
             "KV compression policy string (kvcache/README.md) or dense; empty = the server's default");
  flags->Add("timeout-ms", &timeout_ms, "deadline of each Generate call, ms; 0 = none");
}

v1::GenerateRequest GenerationFlags::ToRequest() const {
  v1::GenerateRequest request;
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(temperature);
  sampling->set_top_k(top_k);
  sampling->set_top_p(top_p);
  sampling->set_seed(static_cast<uint64_t>(seed));
  request.set_max_tokens(max_tokens);
  for (const std::string& stop : stops) request.add_stop(stop);
  request.set_ignore_eos(ignore_eos);
  request.set_policy(policy);
  return request;
}

std::optional<int> ParseCommandFlags(FlagSet* flags, int argc, const char* const* argv) {
  const absl::Status parsed = flags->Parse(argc, argv);
  if (flags->help_requested()) {
    std::fputs(flags->Usage().c_str(), stdout);
    return 0;
  }
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n\n%s", std::string(parsed.message()).c_str(), flags->Usage().c_str());
    return 2;
  }
  return std::nullopt;
}

int PrintError(const char* program, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s: %s\n", program, absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

absl::StatusOr<GenerateResult> GenerateTo(FILE* out, const ServingClient& client,
                                          const v1::GenerateRequest& request, int64_t timeout_ms,
                                          std::vector<int32_t>* ids) {
  GenerateCallbacks callbacks;
  callbacks.on_tokens = [out, ids](const v1::Tokens& tokens) {
    std::fwrite(tokens.text().data(), 1, tokens.text().size(), out);
    std::fflush(out);
    if (ids != nullptr) ids->insert(ids->end(), tokens.ids().begin(), tokens.ids().end());
    return true;
  };
  return client.Generate(request, timeout_ms, callbacks);
}

const char* FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP_TOKEN: return "stop_token";
    case v1::FINISH_REASON_STOP_STRING: return "stop_string";
    case v1::FINISH_REASON_MAX_TOKENS: return "max_tokens";
    case v1::FINISH_REASON_CONTEXT_FULL: return "context_full";
    default: return "unspecified";
  }
}

std::string FormatUsage(const GenerateResult& result) {
  const v1::Started& s = result.started;
  const v1::Finished& f = result.finished;
  const int completion = f.usage().completion_tokens();
  const double decode_ms = f.timings().decode_ms();
  const double decode_tok_s = completion > 1 && decode_ms > 0 ? (completion - 1) * 1e3 / decode_ms : 0;
  return absl::StrFormat(
      "usage: prompt_tokens=%d cached=%d (store=%d resident=%d) computed=%d completion_tokens=%d "
      "finish=%s ttft_ms=%.1f decode_tok_s=%.1f kv_bytes_per_token=%.1f",
      s.prompt_tokens(), s.store_prompt_tokens() + s.resident_prompt_tokens(),
      s.store_prompt_tokens(), s.resident_prompt_tokens(), s.computed_prompt_tokens(), completion,
      FinishReasonName(f.finish_reason()), f.timings().ttft_ms(), decode_tok_s,
      f.kv_bytes_per_token());
}

std::string FormatServerInfo(const v1::ServerInfoResponse& info) {
  return absl::StrCat(
      "model_name: ", info.model_name(), "\nmodel_fingerprint: ", info.model_fingerprint(),
      "\ncontext_tokens: ", info.context_tokens(), "\nvocab_size: ", info.vocab_size(),
      "\nspan_tokens: ", info.span_tokens(), "\ndefault_policy: ", info.default_policy(),
      "\nkv_budget_bytes: ", info.kv_budget_bytes(), "\nkv_bytes_in_use: ", info.kv_bytes_in_use(),
      "\nrunning_sequences: ", info.running_sequences(),
      "\nwaiting_requests: ", info.waiting_requests(), "\nmax_queue: ", info.max_queue(),
      "\nresident_sessions: ", info.resident_sessions(), "\nstore: ", info.store(), "\n");
}

}  // namespace kvspan::node
