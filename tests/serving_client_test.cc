// `kvspan client` and `kvspan chat` as separate processes against a real `kvspan serve`
// (tests/serve_process.h: 127.0.0.1, an ephemeral port; a temporary data directory, the
// shipped model): a
// greedy prompt, a two-turn session that reuses its history, a piped chat, ServerInfo,
// and the exit codes of a dead server (1, UNAVAILABLE) and of usage errors (2).
// Every child runs under a deadline (kill after kChildTimeout), so a hung server or client
// fails the test instead of hanging ctest.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

using ::testing::HasSubstr;

constexpr std::chrono::seconds kChildTimeout{60};
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

struct Output {
  int exit_code = -1;  // negative: killed by that signal
  std::string out, err;
};

pid_t Spawn(const std::vector<std::string>& args, int in_fd, int out_fd, int err_fd) {
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(KVSPAN_COMMAND));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(KVSPAN_COMMAND, argv.data());
    _exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// Runs `kvspan args...` with `input` on stdin; collects stdout and stderr; kills it
// (SIGKILL) past kChildTimeout.
Output RunKvspan(const std::vector<std::string>& args, const std::string& input = "") {
  int in[2], out[2], err[2];
  EXPECT_EQ(pipe(in), 0);
  EXPECT_EQ(pipe(out), 0);
  EXPECT_EQ(pipe(err), 0);
  const pid_t pid = Spawn(args, in[0], out[1], err[1]);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  // Small inputs fit the pipe buffer, so writing all before reading cannot deadlock.
  EXPECT_EQ(write(in[1], input.data(), input.size()), static_cast<ssize_t>(input.size()));
  close(in[1]);
  Output result;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  const auto deadline = std::chrono::steady_clock::now() + kChildTimeout;
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || poll(fds, 2, static_cast<int>(left.count())) <= 0) {
      ADD_FAILURE() << "kvspan " << args[0] << " ran past " << kChildTimeout.count() << " s";
      kill(pid, SIGKILL);
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, n);
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (const pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  result.exit_code = WaitExit(pid);
  return result;
}

int CountOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// One `kvspan serve` for the whole suite (loading the model once).
class ServingClientCommandTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = new ::kvspan::testing::TempDir();
    server_ = new ServeProcess(KVSPAN_COMMAND,
                               {"--model", kModel, "--data", data_dir_->Sub("data"), "--threads", "2"});
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Stop(SIGTERM), 0);
    delete server_;
    delete data_dir_;
  }
  void SetUp() override { ASSERT_FALSE(server_->address().empty()) << "kvspan serve did not come up"; }

  static std::vector<std::string> Client(std::vector<std::string> flags) {
    std::vector<std::string> args = {"client", "--target", server_->address()};
    args.insert(args.end(), flags.begin(), flags.end());
    return args;
  }

  static ::kvspan::testing::TempDir* data_dir_;
  static ServeProcess* server_;
};

::kvspan::testing::TempDir* ServingClientCommandTest::data_dir_ = nullptr;
ServeProcess* ServingClientCommandTest::server_ = nullptr;

// A first turn longer than a span (64 tokens on the shipped model), so that its history
// is reusable from the store as well as from memory.
const char kLongPrompt[] =
    "The Fulton County Grand Jury said Friday an investigation of the recent primary election "
    "produced no evidence that any irregularities took place. The jury further said in term-end "
    "presentments that the City Executive Committee, which had over-all charge of the election, "
    "deserves the praise and thanks of the City of Atlanta for the manner in which the election "
    "was conducted.";

TEST_F(ServingClientCommandTest, GreedyPromptStreamsTextAndUsage) {
  Output r = RunKvspan(Client({"--prompt", "The jury said that", "--temperature", "0", "--max-tokens",
                         "16", "--print-token-ids"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find_first_not_of(" \n"), std::string::npos) << "no text on stdout";
  EXPECT_THAT(r.err, HasSubstr("usage: prompt_tokens="));
  EXPECT_THAT(r.err, HasSubstr("completion_tokens="));
  // The last stdout line is the ids, space-separated.
  const std::string ids = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  EXPECT_TRUE(std::regex_match(ids, std::regex(R"([0-9]+( [0-9]+)*\n)"))) << ids;
}

TEST_F(ServingClientCommandTest, SecondTurnOfASessionReusesItsHistory) {
  Output first = RunKvspan(Client({"--session", "new", "--prompt", kLongPrompt, "--temperature", "0",
                             "--max-tokens", "8"}));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(first.err, m, std::regex(R"(session: (\S+)\n)"))) << first.err;
  const std::string session = m[1];
  Output second = RunKvspan(Client({"--session", session, "--prompt", " The jury also said",
                              "--temperature", "0", "--max-tokens", "8", "--close-session"}));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  ASSERT_TRUE(std::regex_search(second.err, m, std::regex(R"(usage: .* cached=([0-9]+) )")))
      << second.err;
  EXPECT_GT(std::stoi(m[1]), 0) << second.err;
  // --close-session closed it: a third turn is NOT_FOUND.
  Output third = RunKvspan(Client({"--session", session, "--prompt", "again", "--max-tokens", "1"}));
  EXPECT_EQ(third.exit_code, 1);
  EXPECT_THAT(third.err, HasSubstr("kvspan client: NOT_FOUND: "));
}

TEST_F(ServingClientCommandTest, ChatDrivenThroughAPipe) {
  Output r = RunKvspan({"chat", "--target", server_->address(), "--temperature", "0", "--max-tokens", "8"},
                 "The jury said that\nThe election was\n/quit\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(CountOf(r.err, "usage: "), 2) << r.err;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("> "))) << "prompted although stdin is a pipe";
  EXPECT_NE(r.out.find_first_not_of(" \n"), std::string::npos) << "no text on stdout";
}

TEST_F(ServingClientCommandTest, InfoPrintsServerInfo) {
  Output r = RunKvspan(Client({"--info"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("model_name: "));
  EXPECT_THAT(r.out, HasSubstr("context_tokens: 1024\n"));
}

// A port that was free a moment ago: bind to 127.0.0.1:0, read the port, close.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(ServingClientErrorsTest, DeadServerIsUnavailableAndExits1) {
  const std::string target = "127.0.0.1:" + std::to_string(FreePort());
  Output r = RunKvspan({"client", "--target", target, "--prompt", "hello"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, ::testing::StartsWith("kvspan client: UNAVAILABLE: "));
  Output chat = RunKvspan({"chat", "--target", target}, "hello\n");
  EXPECT_EQ(chat.exit_code, 1);
  EXPECT_THAT(chat.err, ::testing::StartsWith("kvspan chat: UNAVAILABLE: "));
}

TEST(ServingClientErrorsTest, UsageErrorsExit2) {
  EXPECT_EQ(RunKvspan({"client", "--prompt", "hello"}).exit_code, 2);  // no --target
  EXPECT_EQ(RunKvspan({"client", "--target", "127.0.0.1:1"}).exit_code, 2);  // no --prompt
  EXPECT_EQ(RunKvspan({"client", "--target", "127.0.0.1:1", "--prompt", "x", "--bogus"}).exit_code, 2);
  EXPECT_EQ(RunKvspan({"chat"}).exit_code, 2);
}

}  // namespace
}  // namespace kvspan::tests
