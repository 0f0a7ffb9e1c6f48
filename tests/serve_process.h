// Test helpers for `kvspan serve` as its own process: start it on 127.0.0.1 with an
// ephemeral port, wait for its ready line, talk to it over gRPC, stop or SIGKILL it; run a
// `kvspan` command line through the shell (RunShell).
#ifndef KVSPAN_TESTS_SERVE_PROCESS_H_
#define KVSPAN_TESTS_SERVE_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "kvspan/v1/serving.grpc.pb.h"

namespace kvspan::tests {

// A running `kvspan serve`. The destructor SIGKILLs it if it still runs.
class ServeProcess {
 public:
  // Starts `binary serve --listen 127.0.0.1:0 <args>` and waits (up to 60 s) for its ready
  // line. address() is empty when it did not come up (exited, or no ready line);
  // http_address() is set when <args> has --http-listen.
  ServeProcess(const std::string& binary, std::vector<std::string> args);
  // Starts `binary cachestore --listen 127.0.0.1:0 --data <data_dir>` and waits for its
  // serving line.
  static std::unique_ptr<ServeProcess> Cachestore(const std::string& binary, const std::string& data_dir,
                                                  const std::string& listen = "127.0.0.1:0",
                                                  const std::vector<std::string>& extra = {});
  // Starts `binary <role> --listen 127.0.0.1:0 <args>` (role: prefill, decode, frontend)
  // and waits for its `kvspan <role>: ready` line.
  static std::unique_ptr<ServeProcess> Role(const std::string& binary, const std::string& role,
                                            std::vector<std::string> args);
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  const std::string& address() const { return address_; }
  // "host:port" of the HTTP listener (its `kvspan serve: http on` line); empty if none.
  const std::string& http_address() const { return http_address_; }
  pid_t pid() const { return pid_; }
  std::unique_ptr<v1::Serving::Stub> NewStub() const;
  // Sends `signal_number` and waits for the exit: the exit code, or -signal.
  int Stop(int signal_number);

 private:
  ServeProcess(const std::string& binary, const std::vector<std::string>& argv, const std::string& address_prefix,
               const std::string& ready_prefix, const std::string& http_prefix);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string address_;
  std::string http_address_;
};

// Everything one Generate call streamed.
struct GenerateOutcome {
  grpc::Status status;
  v1::Started started;
  std::vector<int32_t> ids;
  std::string text;
  v1::Finished finished;
  bool has_finished = false;
};

// Runs Generate to its end. `deadline_ms` > 0 sets the call's deadline.
GenerateOutcome RunGenerate(v1::Serving::Stub& stub, const v1::GenerateRequest& request, int64_t deadline_ms = 0);

// `n` pseudo-random token ids (>= 3: no bos/eos/pad of the shipped model), a function of `seed`.
std::vector<int32_t> PromptIds(uint32_t seed, int n);

// ServerInfo, or an empty response when the call fails (the test's expectation then fails).
v1::ServerInfoResponse ServerInfo(v1::Serving::Stub& stub);

// The server's count of spans put to its store (ServerInfo.store_counters.puts_ok).
int64_t StorePutsOk(v1::Serving::Stub& stub);
// Waits (up to 30 s) until StorePutsOk reaches `target`: spans go to the store
// asynchronously, so a test that needs a request's spans in the store waits for them.
// Returns the count reached.
int64_t WaitForStorePuts(v1::Serving::Stub& stub, int64_t target);

// A greedy request for `ids` (token ids) or, when `text` is non-empty, for text.
v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& ids, int max_tokens, const std::string& policy,
                                  const std::string& tenant);

// What RunShell saw: the exit code (-1 when killed or not started) and stdout + stderr.
struct ShellOutput {
  int exit_code = -1;
  std::string text;
};

// Runs `command` through /bin/sh under `timeout 60`, stdout and stderr together.
ShellOutput RunShell(const std::string& command);

// Makes, in `dir`, with the openssl command: ca.pem, other_ca.pem, server.{pem,key} (from
// ca, SAN 127.0.0.1 and localhost), client.{pem,key} (from ca, clientAuth),
// stranger.{pem,key} (from other_ca). CHECK-fails when openssl does.
void MakeTestCertificates(const std::string& dir);

}  // namespace kvspan::tests

#endif  // KVSPAN_TESTS_SERVE_PROCESS_H_
