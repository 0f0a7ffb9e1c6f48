// The Python client (clients/python/) against a real `kvspan serve` (tests/serve_process.h:
// 127.0.0.1, an ephemeral port, a temporary data directory, the shipped model): its unittest
// suite (clients/python/tests/test_client.py) and the example script, each run by Debian's
// /usr/bin/python3 with the stubs generated into the build tree (target kvspan_python).
// Each child runs under coreutils' `timeout`, so a hung server or client fails the test.
#include <stdio.h>
#include <sys/wait.h>

#include <memory>
#include <string>

#include "common/temp_dir.h"
#include "gtest/gtest.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

const std::string kSource = KVSPAN_SOURCE_DIR;
const std::string kPythonPath = KVSPAN_PYTHONPATH;

struct Output {
  int exit_code = -1;  // negative: killed by that signal
  std::string text;    // stdout and stderr together
};

// Runs `/usr/bin/python3 <script> <address>` (a path under clients/python/) with PYTHONPATH
// set to the generated stubs and the package, for at most 120 s.
Output RunPython(const std::string& script, const std::string& address) {
  const std::string command = "PYTHONPATH='" + kPythonPath + "' timeout -k 5 120 /usr/bin/python3 '" + kSource +
                              "/clients/python/" + script + "' '" + address + "' 2>&1";
  Output out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.text.append(buffer, n);
  const int status = pclose(pipe);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return out;
}

class PythonClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = new ::kvspan::testing::TempDir();
    server_ = new ServeProcess(KVSPAN_COMMAND, {"--model", kSource + "/models/kvspan-brown", "--data",
                                                data_dir_->path(), "--threads", "2"});
  }
  static void TearDownTestSuite() {
    delete server_;
    delete data_dir_;
  }
  void SetUp() override { ASSERT_FALSE(server_->address().empty()) << "kvspan serve did not start"; }

  static ::kvspan::testing::TempDir* data_dir_;
  static ServeProcess* server_;
};

::kvspan::testing::TempDir* PythonClientTest::data_dir_ = nullptr;
ServeProcess* PythonClientTest::server_ = nullptr;

TEST_F(PythonClientTest, UnitTestsPass) {
  const Output out = RunPython("tests/test_client.py", server_->address());
  EXPECT_EQ(out.exit_code, 0) << out.text;
}

TEST_F(PythonClientTest, ChatExampleRunsTwoTurns) {
  const Output out = RunPython("examples/chat.py", server_->address());
  ASSERT_EQ(out.exit_code, 0) << out.text;
  // One usage line per turn; the second turn reuses the first's history.
  const size_t first = out.text.find("usage: ");
  ASSERT_NE(first, std::string::npos) << out.text;
  const size_t second = out.text.find("usage: ", first + 1);
  ASSERT_NE(second, std::string::npos) << out.text;
  EXPECT_EQ(out.text.find("cached=0 ", second), std::string::npos) << out.text;
}

}  // namespace
}  // namespace kvspan::tests
