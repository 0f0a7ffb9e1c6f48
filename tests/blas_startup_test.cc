// The OpenBLAS core selection at start-up, end to end: the real `kvspan` binary, its
// stderr start-up line compared with what OpenBLAS itself prints (OPENBLAS_VERBOSE=2
// makes it print "Core: NAME" when it loads, in the first process and again after the
// re-execution), and a greedy `kvspan generate` whose stdout must not depend on the core.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/file_util.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "kernels/blas_select.h"
#include "kernels/cpu_isa.h"

extern char** environ;

namespace kvspan::tests {
namespace {

using ::testing::HasSubstr;

const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `kvspan args...` with this process's environment minus the three variables of
// kernels/blas_select.h, plus `extra_env` ("NAME=value"); stdout and stderr separately.
ProcessResult RunKvspan(const std::vector<std::string>& args, const std::vector<std::string>& extra_env) {
  ::kvspan::testing::TempDir dir;
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    const std::string name = var.substr(0, var.find('='));
    if (name == kernels::kOpenBlasCoreTypeEnv || name == kernels::kBlasCoreEnv ||
        name == kernels::kBlasReexecEnv || name == kernels::kCpuIsaEnv || name == "OPENBLAS_VERBOSE") {
      continue;
    }
    env.push_back(var);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp, argv;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_copy = args;
  argv.push_back(const_cast<char*>(KVSPAN_COMMAND));
  for (std::string& a : arg_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out_path = dir.Sub("out"), err_path = dir.Sub("err");
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600), STDOUT_FILENO);
    dup2(open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600), STDERR_FILENO);
    execve(KVSPAN_COMMAND, argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ProcessResult run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  run.out = ReadFile(out_path).value_or("");
  run.err = ReadFile(err_path).value_or("");
  return run;
}

// The start-up lines of `err` ("kvspan: CPU ...").
std::vector<std::string> StartupLines(const std::string& err) {
  std::vector<std::string> lines;
  const std::regex re("(^|\n)(kvspan: CPU [^\n]*)");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it) {
    lines.push_back((*it)[2]);
  }
  return lines;
}

// The core named by "OpenBLAS core NAME (" in a start-up line; "" if none.
std::string CoreInLine(const std::string& line) {
  std::smatch m;
  return std::regex_search(line, m, std::regex("; OpenBLAS core (\\S+) \\(")) ? m[1].str() : "";
}

// The last "Core: NAME" OpenBLAS printed (OPENBLAS_VERBOSE=2): the core it runs.
std::string LastVerboseCore(const std::string& err) {
  std::string core;
  const std::regex re("(^|\n)Core: (\\S+)");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it) {
    core = (*it)[2];
  }
  return core;
}

TEST(BlasStartupTest, LineNamesTheCoreOpenBlasRuns) {
  // OpenBLAS's own choice first, then the automatic one, which must be the decision
  // ChooseBlasCore makes for this CPU given that own choice.
  const ProcessResult native = RunKvspan({"generate", "--help"}, {"KVSPAN_BLAS_CORE=native", "OPENBLAS_VERBOSE=2"});
  ASSERT_EQ(native.exit_code, 0) << native.err;
  const std::vector<std::string> native_lines = StartupLines(native.err);
  ASSERT_EQ(native_lines.size(), 1u) << native.err;
  const std::string native_core = CoreInLine(native_lines[0]);
  EXPECT_EQ(native_core, LastVerboseCore(native.err)) << native.err;

  const ProcessResult run = RunKvspan({"generate", "--help"}, {"OPENBLAS_VERBOSE=2"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<std::string> lines = StartupLines(run.err);
  ASSERT_EQ(lines.size(), 1u) << run.err;  // printed once, after any re-execution
  const std::string core = CoreInLine(lines[0]);
  EXPECT_EQ(core, LastVerboseCore(run.err)) << run.err;
  const kernels::BlasCoreChoice choice =
      kernels::ChooseBlasCore(DetectCpuFeatures(), {}, native_core);
  EXPECT_EQ(core, choice.expected_core.empty() ? native_core : choice.expected_core) << lines[0];
  EXPECT_THAT(lines[0], HasSubstr("(" + choice.reason + ")"));
  EXPECT_THAT(lines[0], HasSubstr(ToString(DetectCpuFeatures())));
  EXPECT_EQ(run.out, native.out);  // the usage text is unchanged
}

TEST(BlasStartupTest, ForcedCoreIsInEffectAfterReexec) {
  if (!DetectCpuFeatures().avx2 || !DetectCpuFeatures().fma) GTEST_SKIP() << "no AVX2+FMA";
  const ProcessResult run = RunKvspan({"generate", "--help"}, {"KVSPAN_BLAS_CORE=Haswell", "OPENBLAS_VERBOSE=2"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<std::string> lines = StartupLines(run.err);
  ASSERT_EQ(lines.size(), 1u) << run.err;
  EXPECT_THAT(lines[0], HasSubstr("; OpenBLAS core Haswell (KVSPAN_BLAS_CORE=Haswell)"));
  EXPECT_EQ(LastVerboseCore(run.err), "Haswell") << run.err;
  EXPECT_THAT(run.out, HasSubstr("--max-tokens"));
}

// The line also names the ISA of kvspan's own matrix kernels and why (kernels/cpu_isa.h).
TEST(BlasStartupTest, LineNamesTheMatrixKernelIsa) {
  const ProcessResult forced = RunKvspan({"generate", "--help"}, {"KVSPAN_CPU_ISA=avx2"});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  std::vector<std::string> lines = StartupLines(forced.err);
  ASSERT_EQ(lines.size(), 1u) << forced.err;
  EXPECT_THAT(lines[0], HasSubstr("; matrix kernels avx2 (KVSPAN_CPU_ISA=avx2)"));
  const ProcessResult automatic = RunKvspan({"generate", "--help"}, {});
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  lines = StartupLines(automatic.err);
  ASSERT_EQ(lines.size(), 1u) << automatic.err;
  const kernels::CpuIsaChoice choice = kernels::ChooseCpuIsa(DetectCpuFeatures(), nullptr);
  EXPECT_THAT(lines[0], HasSubstr(absl::StrCat("; matrix kernels ", kernels::CpuIsaName(choice.isa), " (auto)")));
}

TEST(BlasStartupTest, UserCoreTypeIsRespected) {
  if (!DetectCpuFeatures().avx2 || !DetectCpuFeatures().fma) GTEST_SKIP() << "no AVX2+FMA";
  const ProcessResult run = RunKvspan({"generate", "--help"}, {"OPENBLAS_CORETYPE=Haswell", "OPENBLAS_VERBOSE=2"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<std::string> lines = StartupLines(run.err);
  ASSERT_EQ(lines.size(), 1u) << run.err;
  EXPECT_THAT(lines[0], HasSubstr("; OpenBLAS core Haswell (OPENBLAS_CORETYPE set by the user)"));
  EXPECT_EQ(LastVerboseCore(run.err), "Haswell") << run.err;
}

TEST(BlasStartupTest, GreedyOutputDoesNotDependOnTheCore) {
  const std::vector<std::string> args = {"generate", "--model", kModel, "--prompt",
                                         "The jury said that", "--max-tokens", "8",
                                         "--temperature", "0", "--print-token-ids"};
  const ProcessResult native = RunKvspan(args, {"KVSPAN_BLAS_CORE=native"});
  ASSERT_EQ(native.exit_code, 0) << native.err;
  ASSERT_FALSE(native.out.empty());
  const ProcessResult chosen = RunKvspan(args, {});
  ASSERT_EQ(chosen.exit_code, 0) << chosen.err;
  EXPECT_EQ(chosen.out, native.out);
  if (DetectCpuFeatures().avx2 && DetectCpuFeatures().fma) {
    // Another core's kernels for certain (on a CPU OpenBLAS already knows, auto keeps its
    // own choice and the comparison above runs the same kernels twice).
    const ProcessResult haswell = RunKvspan(args, {"KVSPAN_BLAS_CORE=Haswell"});
    ASSERT_EQ(haswell.exit_code, 0) << haswell.err;
    EXPECT_THAT(haswell.err, HasSubstr("OpenBLAS core Haswell"));
    EXPECT_EQ(haswell.out, native.out);
  }
}

}  // namespace
}  // namespace kvspan::tests
