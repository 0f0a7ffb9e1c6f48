// Durability: an acknowledged Put survives SIGKILL of the process. A child process
// (cachestore_crash_child) streams Puts into a store and acknowledges each one on a
// pipe after Put returns; the parent SIGKILLs it mid-stream, reopens the store, and
// checks that every acknowledged key is readable and intact and that no partial value
// is visible (any key present holds its complete, correct value). Several rounds on the
// same directory, so later rounds also recover on top of earlier crashes.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "cachestore/internal/test_util.h"
#include "cachestore/key_scheme.h"
#include "cachestore/store.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "tests/cachestore_crash_values.h"

namespace kvspan::tests {
namespace {

using cachestore::CacheStore;
using cachestore::SpanKey;
using cachestore::StoreOptions;
using cachestore::Value;

// Starts the child on `dir` from index `first`; returns its pid and the read end of its
// stdout.
pid_t StartChild(const std::string& dir, uint32_t first, int* read_fd) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const std::string first_arg = std::to_string(first);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl(KVSPAN_CRASH_CHILD, KVSPAN_CRASH_CHILD, dir.c_str(), first_arg.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  *read_fd = fds[0];
  return pid;
}

// Reads acknowledgements until `want` have arrived (or the pipe closes).
std::vector<uint32_t> ReadAcks(int fd, size_t want) {
  std::vector<uint32_t> acks;
  std::string line;
  char c;
  while (acks.size() < want && read(fd, &c, 1) == 1) {
    if (c == '\n') {
      acks.push_back(static_cast<uint32_t>(std::stoul(line)));
      line.clear();
    } else {
      line.push_back(c);
    }
  }
  return acks;
}

TEST(CacheStoreCrashTest, AcknowledgedPutsSurviveSigkill) {
  cachestore::testing::TempDir dir;
  const std::string path = dir.Sub("db");
  std::set<uint32_t> acknowledged;
  uint32_t highest_started = 0;
  const size_t kAcksPerRound[] = {37, 90, 13, 61};
  for (int round = 0; round < 4; ++round) {
    const uint32_t first = static_cast<uint32_t>(round) * 100000;
    int fd = -1;
    const pid_t pid = StartChild(path, first, &fd);
    ASSERT_GT(pid, 0);
    std::vector<uint32_t> acks = ReadAcks(fd, kAcksPerRound[round]);
    // The child is now inside the next Put (or about to start it): kill it there.
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited on its own, status " << status;
    // Acks written before the kill may still sit in the pipe.
    std::vector<uint32_t> more = ReadAcks(fd, SIZE_MAX);
    close(fd);
    acks.insert(acks.end(), more.begin(), more.end());
    ASSERT_EQ(acks.size() >= kAcksPerRound[round], true) << "round " << round;
    for (uint32_t i : acks) acknowledged.insert(i);
    highest_started = acks.back() + 1;  // possibly in flight when killed

    StoreOptions options;
    options.path = path;
    options.memory_budget_bytes = 0;  // every Get reads RocksDB
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<CacheStore> store, CacheStore::Open(options));
    for (uint32_t i : acknowledged) {
      ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(CrashKey(i)));
      ASSERT_TRUE(v.has_value()) << "acknowledged key " << i << " lost in round " << round;
      ASSERT_EQ(**v, CrashValue(i)) << "key " << i;
    }
    // Keys past the acknowledged ones: absent, or present and whole.
    for (uint32_t i = highest_started; i < highest_started + 3; ++i) {
      ASSERT_OK_AND_ASSIGN(std::optional<Value> v, store->Get(CrashKey(i)));
      if (v.has_value()) {
        EXPECT_EQ(**v, CrashValue(i)) << "partial value for key " << i;
      }
    }
    EXPECT_EQ(store->Stats().checksum_failures, 0) << "round " << round;
    EXPECT_GE(store->Stats().disk_entries, static_cast<int64_t>(acknowledged.size()));
  }
}

}  // namespace
}  // namespace kvspan::tests
