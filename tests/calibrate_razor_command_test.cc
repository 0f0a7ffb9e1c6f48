// `kvspan calibrate-razor` as a separate process (the real binary): a short run on the
// shipped models/kvspan-brown writes a heads file that kvcache::ParsePolicy reads and that
// matches the set it prints; usage errors exit 2, runtime errors (model, output file) 1.
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/policy.h"

namespace kvspan::tests {
namespace {

using ::testing::HasSubstr;

const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

// Runs `kvspan calibrate-razor args...`; returns the exit code (negative: killed by that
// signal) and stdout + stderr.
std::pair<int, std::string> RunCommand(std::vector<std::string> args) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(KVSPAN_COMMAND));
    argv.push_back(const_cast<char*>("calibrate-razor"));
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(KVSPAN_COMMAND, argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::string output;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) output.append(buf, n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status), output};
}

TEST(CalibrateRazorCommandTest, Help) {
  auto [code, out] = RunCommand({"--help"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("--induction-fraction"));
}

TEST(CalibrateRazorCommandTest, WritesHeadsFileThatParsePolicyReads) {
  ::kvspan::testing::TempDir dir;
  const std::string path = dir.Sub("heads.txt");
  auto [code, out] = RunCommand({"--model", kModel, "--out", path, "--trials", "2", "--threads", "2"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("KV heads (max over the GQA group)"));
  // "retrieval heads (3 of 8): 0.0:0.1:2.1": 15% of 8 -> 2 by induction, 5% -> 1 by echo.
  const size_t at = out.find("retrieval heads (");
  ASSERT_NE(at, std::string::npos) << out;
  const size_t colon = out.find("): ", at);
  const std::string inline_form = out.substr(colon + 3, out.find('\n', colon) - colon - 3);
  ASSERT_OK_AND_ASSIGN(kvcache::Policy printed,
                       kvcache::ParsePolicy("razor(retrieval=" + inline_form + ")/bf16"));
  ASSERT_OK_AND_ASSIGN(kvcache::Policy from_file,
                       kvcache::ParsePolicy("razor(retrieval=@" + path + ")/bf16"));
  EXPECT_EQ(from_file, printed);
  const size_t num_heads = from_file.reducers[0].Get("retrieval").heads.size();
  EXPECT_GE(num_heads, 2u);
  EXPECT_LE(num_heads, 3u);
}

TEST(CalibrateRazorCommandTest, UsageErrorsExit2) {
  ::kvspan::testing::TempDir dir;
  const std::string out = dir.Sub("heads.txt");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "--model is required"},
      {{"--model", kModel}, "--out is required"},
      {{"--model", kModel, "--out", out, "--trials", "0"}, "num_trials"},
      {{"--model", kModel, "--out", out, "--trials", "many"}, "trials"},
      {{"--model", kModel, "--out", out, "--induction-fraction", "2"}, "induction_fraction"},
      {{"--model", kModel, "--out", out, "--repeats", "1"}, "repeats"},
      {{"--model", kModel, "--out", out, "--seed", "-1"}, "--seed"},
      {{"--model", kModel, "--out", out, "--frobnicate"}, "frobnicate"},
      // Valid alone, too long for this model's 1024 positions: known after loading it.
      {{"--model", kModel, "--out", out, "--segment-tokens", "300"}, "max_position_embeddings"},
  };
  for (const auto& [args, message] : cases) {
    auto [code, text] = RunCommand(args);
    EXPECT_EQ(code, 2) << text;
    EXPECT_THAT(text, HasSubstr(message));
  }
}

TEST(CalibrateRazorCommandTest, RuntimeErrorsExit1) {
  ::kvspan::testing::TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--model", dir.Sub("no-model"), "--out", dir.Sub("heads.txt")}, "config.json"},
      {{"--model", kModel, "--out", dir.Sub("missing/heads.txt")}, "no directory"},
      {{"--model", kModel, "--out", dir.path()}, "is a directory"},
  };
  for (const auto& [args, message] : cases) {
    auto [code, text] = RunCommand(args);
    EXPECT_EQ(code, 1) << text;
    EXPECT_THAT(text, HasSubstr(message));
  }
}

}  // namespace
}  // namespace kvspan::tests
