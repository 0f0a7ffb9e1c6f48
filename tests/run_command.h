// RunCommand: runs a shell command line and returns its exit code with its stdout and stderr
// together, for tests that run the `kvspan` binary or node scripts to completion.
#ifndef KVSPAN_TESTS_RUN_COMMAND_H_
#define KVSPAN_TESTS_RUN_COMMAND_H_

#include <stdio.h>
#include <sys/wait.h>

#include <string>
#include <utility>

namespace kvspan::tests {

// The command's exit code (-1 if it did not exit normally or could not start) and its
// stdout and stderr together. Blocks until the command ends. Thread-safe.
inline std::pair<int, std::string> RunCommand(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace kvspan::tests

#endif  // KVSPAN_TESTS_RUN_COMMAND_H_
