#include "tests/serve_process.h"

#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/logging.h"

namespace kvspan::tests {
namespace {

// Every test that talks to a server process over a socket: a write to a connection the
// server already closed (a refused TLS client, a stopped server) must fail with EPIPE,
// not kill the test with SIGPIPE (which leaves its server children holding ctest's pipe
// until the test's timeout).
const bool kSigpipeIgnored = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();


// One line from `fd`, waiting at most `timeout_ms` in all; false at EOF or timeout.
bool ReadLine(int fd, int timeout_ms, std::string* line) {
  line->clear();
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char c;
  while (true) {
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) return false;
    if (read(fd, &c, 1) != 1) return false;
    if (c == '\n') return true;
    line->push_back(c);
  }
}

}  // namespace

ServeProcess::ServeProcess(const std::string& binary, std::vector<std::string> args)
    : ServeProcess(binary,
                   [&] {
                     std::vector<std::string> all = {"serve", "--listen", "127.0.0.1:0"};
                     all.insert(all.end(), args.begin(), args.end());
                     return all;
                   }(),
                   "kvspan serve: listening on ", "kvspan serve: ready", "kvspan serve: http on ") {}

std::unique_ptr<ServeProcess> ServeProcess::Cachestore(const std::string& binary, const std::string& data_dir,
                                                       const std::string& listen,
                                                       const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {"cachestore", "--listen", listen, "--data", data_dir};
  argv.insert(argv.end(), extra.begin(), extra.end());
  // Its one line, "kvspan cachestore: serving DIR on HOST:PORT", is both.
  return std::unique_ptr<ServeProcess>(new ServeProcess(binary, argv, "", "kvspan cachestore: serving ", ""));
}

std::unique_ptr<ServeProcess> ServeProcess::Role(const std::string& binary, const std::string& role,
                                                 std::vector<std::string> args) {
  std::vector<std::string> all = {role, "--listen", "127.0.0.1:0"};
  all.insert(all.end(), args.begin(), args.end());
  return std::unique_ptr<ServeProcess>(
      new ServeProcess(binary, all, "kvspan " + role + ": listening on ", "kvspan " + role + ": ready",
                       "kvspan " + role + ": http on "));
}

ServeProcess::ServeProcess(const std::string& binary, const std::vector<std::string>& argv,
                           const std::string& address_prefix, const std::string& ready_prefix,
                           const std::string& http_prefix) {
  int fds[2];
  if (pipe(fds) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<std::string> all = {binary};
    all.insert(all.end(), argv.begin(), argv.end());
    std::vector<char*> args;
    for (auto& a : all) args.push_back(a.data());
    args.push_back(nullptr);
    execv(binary.c_str(), args.data());
    _exit(127);
  }
  close(fds[1]);
  out_fd_ = fds[0];
  std::string line, address;
  while (ReadLine(out_fd_, 60000, &line)) {
    if (!address_prefix.empty() && line.rfind(address_prefix, 0) == 0) address = line.substr(address_prefix.size());
    if (!http_prefix.empty() && line.rfind(http_prefix, 0) == 0) http_address_ = line.substr(http_prefix.size());
    if (line.rfind(ready_prefix, 0) == 0) {
      if (address_prefix.empty()) address = line.substr(line.rfind(" on ") + 4);
      address_ = address;
      break;
    }
  }
}

ServeProcess::~ServeProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

std::unique_ptr<v1::Serving::Stub> ServeProcess::NewStub() const {
  return v1::Serving::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
}

int ServeProcess::Stop(int signal_number) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal_number);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  close(out_fd_);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

GenerateOutcome RunGenerate(v1::Serving::Stub& stub, const v1::GenerateRequest& request, int64_t deadline_ms) {
  GenerateOutcome out;
  grpc::ClientContext context;
  if (deadline_ms > 0) context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_started()) out.started = response.started();
    if (response.has_tokens()) {
      out.ids.insert(out.ids.end(), response.tokens().ids().begin(), response.tokens().ids().end());
      out.text += response.tokens().text();
    }
    if (response.has_finished()) {
      out.finished = response.finished();
      out.has_finished = true;
    }
  }
  out.status = reader->Finish();
  return out;
}

std::vector<int32_t> PromptIds(uint32_t seed, int n) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(3, 4095);
  std::vector<int32_t> ids(n);
  for (int32_t& x : ids) x = id(rng);
  return ids;
}

v1::ServerInfoResponse ServerInfo(v1::Serving::Stub& stub) {
  grpc::ClientContext context;
  v1::ServerInfoResponse info;
  if (!stub.ServerInfo(&context, {}, &info).ok()) return {};
  return info;
}

int64_t StorePutsOk(v1::Serving::Stub& stub) { return ServerInfo(stub).store_counters().puts_ok(); }

int64_t WaitForStorePuts(v1::Serving::Stub& stub, int64_t target) {
  int64_t puts = StorePutsOk(stub);
  for (int i = 0; i < 600 && puts < target; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    puts = StorePutsOk(stub);
  }
  return puts;
}

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& ids, int max_tokens, const std::string& policy,
                                  const std::string& tenant) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_temperature(0);
  r.set_max_tokens(max_tokens);
  r.set_policy(policy);
  r.set_tenant(tenant);
  r.set_ignore_eos(true);
  return r;
}

ShellOutput RunShell(const std::string& command) {
  ShellOutput output;
  FILE* pipe = popen(("timeout 60 " + command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.text.append(buffer, n);
  const int status = pclose(pipe);
  output.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return output;
}

void MakeTestCertificates(const std::string& dir) {
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  CHECK(WriteFile(dir + "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n").ok());
  CHECK(WriteFile(dir + "/client.ext", "extendedKeyUsage=clientAuth\n").ok());
  std::vector<std::string> commands;
  for (const char* ca : {"ca", "other_ca"}) {
    commands.push_back(absl::StrCat("openssl req -x509 ", ec, " -days 2 -subj /CN=kvspan-test-", ca, " -keyout ",
                                    dir, "/", ca, ".key -out ", dir, "/", ca, ".pem"));
  }
  auto leaf = [&](const char* name, const char* ca, const char* ext) {
    commands.push_back(absl::StrCat("openssl req ", ec, " -subj /CN=", name, " -keyout ", dir, "/", name,
                                    ".key -out ", dir, "/", name, ".csr"));
    commands.push_back(absl::StrCat("openssl x509 -req -days 2 -in ", dir, "/", name, ".csr -CA ", dir, "/", ca,
                                    ".pem -CAkey ", dir, "/", ca, ".key -CAcreateserial -extfile ", dir, "/", ext,
                                    " -out ", dir, "/", name, ".pem"));
  };
  leaf("server", "ca", "server.ext");
  leaf("client", "ca", "client.ext");
  leaf("stranger", "other_ca", "client.ext");
  for (const std::string& command : commands) {
    const ShellOutput made = RunShell(command);
    CHECK_EQ(made.exit_code, 0) << command << "\n" << made.text;
  }
}

}  // namespace kvspan::tests
