// `kvspan client --target ADDR --prompt TEXT`: one Generate call to a `kvspan serve`.
// stdout: the generated text as it streams, then a newline; with --print-token-ids the
// generated ids, space-separated, as the last line. stderr: "session: ID" when
// --session new opened one, then the usage line (node/serving_client.h, FormatUsage).
// `kvspan client --target ADDR --info` prints ServerInfo instead.
// Exit codes: 0 done, 1 an RPC failed ("kvspan client: CODE: message" on stderr), 2 usage.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/flags.h"
#include "node/commands.h"
#include "node/serving_client.h"

namespace kvspan::node {
namespace {

constexpr char kName[] = "kvspan client";

int UsageError(const FlagSet& flags, const char* message) {
  std::fprintf(stderr, "%s: %s\n\n%s", kName, message, flags.Usage().c_str());
  return 2;
}

}  // namespace

int RunClient(int argc, const char* const* argv) {
  ConnectionFlags connection;
  const std::string& target = connection.target;
  std::string prompt;
  GenerationFlags generation;
  std::string tenant;
  std::string request_id;
  std::string session;
  bool close_session = false;
  bool print_token_ids = false;
  bool info = false;
  FlagSet flags(kName,
                "Sends one Generate call to a `kvspan serve` at --target and streams the text to "
                "stdout; the usage line goes to stderr.");
  connection.AddTo(&flags);
  flags.Add("prompt", &prompt, "the prompt text (with --session: this turn's text)");
  generation.AddTo(&flags);
  flags.Add("tenant", &tenant, "tenant (salts the cache-store namespace); empty = shared");
  flags.Add("request-id", &request_id, "request id; empty = the server makes one");
  flags.Add("session", &session, "new: open a session first (its id goes to stderr); ID: use it");
  flags.Add("close-session", &close_session, "close the session after this turn");
  flags.Add("print-token-ids", &print_token_ids,
            "print the generated token ids, space-separated, as the last line");
  flags.Add("info", &info, "print ServerInfo and exit");
  if (std::optional<int> exit_code = ParseCommandFlags(&flags, argc, argv)) return *exit_code;
  if (target.empty()) return UsageError(flags, "--target is required");
  if (!info && prompt.empty()) return UsageError(flags, "--prompt is required");
  if (close_session && session.empty()) return UsageError(flags, "--close-session needs --session");

  absl::StatusOr<ServingClientOptions> options = connection.ToOptions();
  if (!options.ok()) return PrintError(kName, options.status());
  absl::StatusOr<std::unique_ptr<ServingClient>> client = ServingClient::Create(*options);
  if (!client.ok()) return PrintError(kName, client.status());
  if (info) {
    absl::StatusOr<kvspan::v1::ServerInfoResponse> server_info = (*client)->ServerInfo();
    if (!server_info.ok()) return PrintError(kName, server_info.status());
    std::fputs(FormatServerInfo(*server_info).c_str(), stdout);
    return 0;
  }

  kvspan::v1::GenerateRequest request = generation.ToRequest();
  request.set_text(prompt);
  request.set_tenant(tenant);
  request.set_request_id(request_id);
  if (session == "new") {
    kvspan::v1::OpenSessionRequest open;
    open.set_policy(generation.policy);
    open.set_tenant(tenant);
    absl::StatusOr<kvspan::v1::OpenSessionResponse> opened = (*client)->OpenSession(open);
    if (!opened.ok()) return PrintError(kName, opened.status());
    std::fprintf(stderr, "session: %s\n", opened->session_id().c_str());
    session = opened->session_id();
    request.clear_policy();  // the session's policy applies
  }
  request.set_session_id(session);

  std::vector<int32_t> ids;
  absl::StatusOr<GenerateResult> result =
      GenerateTo(stdout, **client, request, generation.timeout_ms, &ids);
  int exit_code = 0;
  if (result.ok()) {
    std::fputc('\n', stdout);
    if (print_token_ids) std::printf("%s\n", absl::StrJoin(ids, " ").c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", FormatUsage(*result).c_str());
  } else {
    exit_code = PrintError(kName, result.status());
  }
  // The session is closed even after a failed turn: the caller asked for it.
  if (close_session) {
    if (absl::Status closed = (*client)->CloseSession(session); !closed.ok()) {
      exit_code = PrintError(kName, closed);
    }
  }
  return exit_code;
}

}  // namespace kvspan::node
