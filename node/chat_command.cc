// `kvspan chat --target ADDR`: a multi-turn conversation with a `kvspan serve` in one
// session. Each line read from stdin is a turn; the answer streams to stdout and ends
// with a newline, then the turn's usage line (node/serving_client.h, FormatUsage) goes to
// stderr, where "cached=" shows how much of the history was reused. "/quit" or EOF closes
// the session and exits 0. On a terminal each turn is prompted with "> " on stdout;
// with stdin piped there is no prompt, so a script (or a test) can drive it.
// The text of a turn is the line plus a newline; turns after the first start with a
// newline too, so that the history alternates lines of user text and answers.
// Exit codes: 0 done, 1 an RPC failed ("kvspan chat: CODE: message"), 2 usage.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "common/flags.h"
#include "node/commands.h"
#include "node/serving_client.h"

namespace kvspan::node {
namespace {

constexpr char kName[] = "kvspan chat";

}  // namespace

int RunChat(int argc, const char* const* argv) {
  ConnectionFlags connection;
  const std::string& target = connection.target;
  GenerationFlags generation;
  FlagSet flags(kName,
                "An interactive multi-turn session with a `kvspan serve` at --target: one turn per "
                "line of stdin, /quit or EOF to end.");
  connection.AddTo(&flags);
  generation.AddTo(&flags);
  if (std::optional<int> exit_code = ParseCommandFlags(&flags, argc, argv)) return *exit_code;
  if (target.empty()) {
    std::fprintf(stderr, "%s: --target is required\n\n%s", kName, flags.Usage().c_str());
    return 2;
  }

  absl::StatusOr<ServingClientOptions> options = connection.ToOptions();
  if (!options.ok()) return PrintError(kName, options.status());
  absl::StatusOr<std::unique_ptr<ServingClient>> client = ServingClient::Create(*options);
  if (!client.ok()) return PrintError(kName, client.status());
  kvspan::v1::OpenSessionRequest open;
  open.set_policy(generation.policy);
  absl::StatusOr<kvspan::v1::OpenSessionResponse> session = (*client)->OpenSession(open);
  if (!session.ok()) return PrintError(kName, session.status());
  std::fprintf(stderr, "session: %s (policy %s)\n", session->session_id().c_str(),
               session->policy().c_str());

  kvspan::v1::GenerateRequest request = generation.ToRequest();
  request.clear_policy();  // the session's policy applies
  request.set_session_id(session->session_id());
  const bool interactive = isatty(STDIN_FILENO) != 0;
  int exit_code = 0;
  int turn = 0;
  std::string line;
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "/quit") break;
    if (line.empty()) continue;
    request.set_text(turn == 0 ? line + "\n" : "\n" + line + "\n");
    absl::StatusOr<GenerateResult> result =
        GenerateTo(stdout, **client, request, generation.timeout_ms);
    if (!result.ok()) {
      exit_code = PrintError(kName, result.status());
      break;
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", FormatUsage(*result).c_str());
    ++turn;
  }
  if (absl::Status closed = (*client)->CloseSession(session->session_id()); !closed.ok()) {
    // After a failed turn the close is best effort (its error would mostly repeat the turn's).
    if (exit_code == 0) exit_code = PrintError(kName, closed);
  }
  return exit_code;
}

}  // namespace kvspan::node
