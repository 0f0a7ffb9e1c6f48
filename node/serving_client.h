// The client side of kvspan.v1.Serving (proto/kvspan/v1/serving.proto), shared by
// `kvspan client`, `kvspan chat` and bench/serve_bench:
//   - ServingClient: a synchronous client over one channel to a `kvspan serve`;
//   - GenerationFlags: the sampling / length / policy flags both commands take, and the
//     GenerateRequest they build;
//   - the printing both commands do: streamed text, the usage line, errors.
#ifndef KVSPAN_NODE_SERVING_CLIENT_H_
#define KVSPAN_NODE_SERVING_CLIENT_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/flags.h"
#include "kvspan/v1/serving.grpc.pb.h"

namespace kvspan::node {

struct ServingClientOptions {
  // host:port of a `kvspan serve`. Required.
  std::string target;
  // Deadline of OpenSession, CloseSession and ServerInfo, from the call's start.
  int64_t unary_timeout_ms = 30000;
  // Sent as `authorization: Bearer <api_key>` metadata on every call; empty = none.
  std::string api_key;
  // TLS: PEM contents, not paths. tls_ca_pem non-empty = a TLS channel that trusts it;
  // tls_cert_pem + tls_key_pem = the client certificate a mutual-TLS server asks for.
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

// The connection flags `kvspan client` and `kvspan chat` share.
struct ConnectionFlags {
  std::string target;
  std::string api_key_file;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;

  // Registers --target, --api-key-file, --tls-ca, --tls-cert, --tls-key on `flags`, writing
  // into this struct (which must outlive flags.Parse).
  void AddTo(FlagSet* flags);
  // The client options: the key from ResolveApiKey, the PEM files read. InvalidArgument for
  // --tls-cert / --tls-key without each other or without --tls-ca; ReadFile's errors.
  absl::StatusOr<ServingClientOptions> ToOptions() const;
};

// The key `kvspan client` / `kvspan chat` send: the first key of `api_key_file` when it is
// non-empty (LoadApiKeyFile's errors), else $KVSPAN_API_KEY, else empty (none).
absl::StatusOr<std::string> ResolveApiKey(const std::string& api_key_file);

// What one Generate call returned: the server's Started and Finished, and the client's
// own clock (steady, from the call's start).
struct GenerateResult {
  kvspan::v1::Started started;
  kvspan::v1::Finished finished;
  // The first Tokens message with ids; the Finished message if none came before it.
  double first_token_ms = 0;
  double finished_ms = 0;
};

// Called from the thread that runs Generate, in stream order. A callback that returns
// false cancels the call (Generate then returns Cancelled). Either may be empty.
struct GenerateCallbacks {
  std::function<bool(const kvspan::v1::Started&)> on_started;
  std::function<bool(const kvspan::v1::Tokens&)> on_tokens;
};

// Thread-safe: one channel shared by all calls; each call blocks its calling thread.
// Errors are the server's gRPC status as absl::Status (proto/status_conversion.h), e.g.
// Unavailable when nothing listens at the target.
class ServingClient {
 public:
  // Creates the channel; connection is lazy (a down server shows up as Unavailable on
  // the first call). InvalidArgument for an empty target or a non-positive timeout.
  static absl::StatusOr<std::unique_ptr<ServingClient>> Create(const ServingClientOptions& options);

  // Runs one Generate call to its Finished message. timeout_ms > 0 is the call's deadline
  // (DeadlineExceeded past it); 0 means none. Internal if the stream breaks the protocol
  // (no Started first, ends without Finished); Cancelled if a callback returned false.
  absl::StatusOr<GenerateResult> Generate(const kvspan::v1::GenerateRequest& request,
                                          int64_t timeout_ms,
                                          const GenerateCallbacks& callbacks = {}) const;

  absl::StatusOr<kvspan::v1::OpenSessionResponse> OpenSession(
      const kvspan::v1::OpenSessionRequest& request) const;
  // NotFound if the session is unknown or expired.
  absl::Status CloseSession(const std::string& session_id) const;
  absl::StatusOr<kvspan::v1::ServerInfoResponse> ServerInfo() const;

  const std::string& target() const { return options_.target; }

 private:
  explicit ServingClient(const ServingClientOptions& options);
  // Adds the API key, if any, to `context`.
  void Authorize(grpc::ClientContext* context) const;
  // Authorize, and the unary deadline.
  void SetUnaryDeadline(grpc::ClientContext* context) const;

  const ServingClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<kvspan::v1::Serving::Stub> stub_;
};

// The generation flags `kvspan client` and `kvspan chat` share. Defaults are the proto's.
struct GenerationFlags {
  int max_tokens = 128;
  double temperature = 1.0;     // 0 = greedy
  int top_k = 0;                // 0 = no limit
  double top_p = 1.0;
  int64_t seed = 0;
  std::vector<std::string> stops;
  bool ignore_eos = false;
  std::string policy;           // empty = the server's default
  int64_t timeout_ms = 0;       // Generate's deadline; 0 = none

  // Registers --max-tokens, --temperature, --top-k, --top-p, --seed, --stop, --ignore-eos,
  // --policy and --timeout-ms on `flags`, writing into this struct (which must outlive
  // flags.Parse).
  void AddTo(FlagSet* flags);
  // A GenerateRequest with these settings and no prompt, session, tenant or request id.
  kvspan::v1::GenerateRequest ToRequest() const;
};

// Parses a command's flags. Returns the exit code when the command should stop now: 0
// after printing Usage() to stdout for --help, 2 after printing the parse error and
// Usage() to stderr; nullopt when the command should go on.
std::optional<int> ParseCommandFlags(FlagSet* flags, int argc, const char* const* argv);

// Prints "<program>: <CODE>: <message>" to stderr (CODE as absl::StatusCodeToString
// spells it, e.g. UNAVAILABLE) and returns 1, the exit code of a runtime error.
int PrintError(const char* program, const absl::Status& status);

// Runs `request` on `client`, writing each Tokens message's text to `out` (flushed) as
// it arrives, and appending its ids to *ids when ids is not null (borrowed for the call).
// Returns Generate's result or error; what was written stays written.
absl::StatusOr<GenerateResult> GenerateTo(FILE* out, const ServingClient& client,
                                          const kvspan::v1::GenerateRequest& request,
                                          int64_t timeout_ms, std::vector<int32_t>* ids = nullptr);

// "stop_token", "stop_string", "max_tokens", "context_full" or "unspecified".
const char* FinishReasonName(kvspan::v1::FinishReason reason);

// The one-line usage summary, without a newline:
//   usage: prompt_tokens=P cached=C (store=S resident=R) computed=K completion_tokens=N
//   finish=REASON ttft_ms=T decode_tok_s=D kv_bytes_per_token=B
// (one line; wrapped here). ttft_ms is the server's Timings.ttft_ms; decode_tok_s is
// (N - 1) / decode_ms, 0 when N < 2.
std::string FormatUsage(const GenerateResult& result);

// ServerInfo as "name: value" lines, one per field of ServerInfoResponse, in proto order.
std::string FormatServerInfo(const kvspan::v1::ServerInfoResponse& info);

}  // namespace kvspan::node

#endif  // KVSPAN_NODE_SERVING_CLIENT_H_
