// `kvspan cachestore` as a separate process: it serves a store on an ephemeral port,
// answers a client, stops cleanly on SIGTERM, and serves the same data after a restart.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "cachestore/internal/test_util.h"
#include "cachestore/key_scheme.h"
#include "cachestore/remote_client.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::tests {
namespace {

using cachestore::testing::Payload;
using cachestore::testing::TestKey;

struct Child {
  pid_t pid = -1;
  int out_fd = -1;
};

Child Start(std::vector<std::string> args) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  Child child;
  child.pid = fork();
  if (child.pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(KVSPAN_CACHESTORE_COMMAND));
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(KVSPAN_CACHESTORE_COMMAND, argv.data());
    _exit(127);
  }
  close(fds[1]);
  child.out_fd = fds[0];
  return child;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  return line;
}

int StopAndWait(const Child& child, int signal_number) {
  kill(child.pid, signal_number);
  int status = 0;
  waitpid(child.pid, &status, 0);
  close(child.out_fd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// The address from "kvspan cachestore: serving DIR on HOST:PORT".
std::string AddressOf(const std::string& line) {
  const size_t at = line.rfind(" on ");
  return at == std::string::npos ? "" : line.substr(at + 4);
}

TEST(CachestoreCommandTest, ServesStopsOnSigtermAndKeepsDataAcrossRestart) {
  cachestore::testing::TempDir dir;
  const std::string value = Payload(1, 3 << 20);
  for (int run = 0; run < 2; ++run) {
    Child child = Start({"cachestore", "--data", dir.Sub("db"), "--listen", "127.0.0.1:0"});
    const std::string line = ReadLine(child.out_fd);
    ASSERT_THAT(line, ::testing::StartsWith("kvspan cachestore: serving "));
    cachestore::RemoteClientOptions o;
    o.target = AddressOf(line);
    ASSERT_OK_AND_ASSIGN(auto client, cachestore::RemoteCacheClient::Create(o));
    if (run == 0) {
      ASSERT_OK(client->Put(TestKey(1), value));
    }
    ASSERT_OK_AND_ASSIGN(std::optional<cachestore::Value> v, client->Get(TestKey(1)));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(**v, value);
    // Close our connection first: gRPC's graceful shutdown waits out its grace period
    // (5 s) while a client keeps an idle connection open.
    client.reset();
    EXPECT_EQ(StopAndWait(child, SIGTERM), 0);
  }
}

TEST(CachestoreCommandTest, MissingDataFlagIsAUsageError) {
  Child child = Start({"cachestore", "--listen", "127.0.0.1:0"});
  int status = 0;
  waitpid(child.pid, &status, 0);
  close(child.out_fd);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  Child bad = Start({"cachestore", "--data", "/tmp/x", "--no-such-flag", "1"});
  waitpid(bad.pid, &status, 0);
  close(bad.out_fd);
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace
}  // namespace kvspan::tests
