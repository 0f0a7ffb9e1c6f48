// The deployment files, checked offline (no cluster, no Docker engine here): the manifests under
// deploy/k8s against the Kubernetes API schemas and every container's command line against the
// real binary and how the roles reach each other (deploy/check/check.mjs and wiring.mjs, npm
// packages installed by tools/setup.sh), the `--check-flags` mode of every role that check
// relies on, and deploy/Dockerfile's COPY sources and RUN scripts.
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/run_command.h"

namespace kvspan::tests {
namespace {

using ::testing::HasSubstr;

const std::string kBinary = KVSPAN_COMMAND;
const std::string kSource = KVSPAN_SOURCE_DIR;

TEST(DeployCheckTest, ManifestsValidateAndEveryCommandLineParses) {
  ASSERT_EQ(access((kSource + "/deploy/check/node_modules/kubernetes-models/package.json").c_str(), R_OK), 0)
      << "kubernetes-models is not installed: run tools/setup.sh (npm ci --prefix deploy/check)";
  const std::string command = absl::StrCat("node ", kSource, "/deploy/check/check.mjs ", kBinary);
  auto [code, output] = RunCommand(command);
  EXPECT_EQ(code, 0) << command << "\n" << output;
  EXPECT_THAT(output, HasSubstr("ok: self-test: broken Deployment rejected")) << output;
  EXPECT_THAT(output, HasSubstr("ok: self-test: kvspan serve rejects an unknown flag (exit 2)")) << output;
  EXPECT_THAT(output, HasSubstr("ok: all-in-one/statefulset.yaml: StatefulSet kvspan/kvspan: kvspan serve accepts"))
      << output;
  EXPECT_THAT(output, HasSubstr("ok: self-test: a non-headless, a misspelled and a wrong-port --decode and unequal "
                                "--span-tokens rejected"))
      << output;
  // The disaggregated layout: every role's command line, the frontend's discovery of the CPU
  // workers and of the GPU variants (gpu/, a subfolder on top of its parent), one S.
  const std::vector<std::string> disaggregated = {
      "disaggregated/cachestore.yaml: StatefulSet kvspan-cachestore/cachestore: kvspan cachestore accepts",
      "disaggregated/prefill.yaml: Deployment kvspan-prefill/prefill: kvspan prefill accepts",
      "disaggregated/decode.yaml: Deployment kvspan-decode/decode: kvspan decode accepts",
      "disaggregated/frontend.yaml: Deployment kvspan-frontend/frontend: kvspan frontend accepts",
      "disaggregated/gpu/decode-gpu.yaml: Deployment kvspan-decode-gpu/decode: kvspan decode accepts",
      "--decode kvspan-decode:7420 reaches disaggregated/decode.yaml: Deployment kvspan-decode/decode through a "
      "headless Service",
      "disaggregated/gpu/prefill-gpu.yaml: Deployment kvspan-prefill-gpu/prefill: found by "
      "disaggregated/frontend.yaml: Deployment kvspan-frontend/frontend (--prefill)",
      "disaggregated/gpu/decode-gpu.yaml: Deployment kvspan-decode-gpu/decode: found by "
      "disaggregated/frontend.yaml: Deployment kvspan-frontend/frontend (--decode)",
      "disaggregated: --span-tokens 64 on all 5 of its roles' command lines",
  };
  for (const std::string& line : disaggregated) EXPECT_THAT(output, HasSubstr(line)) << output;
  EXPECT_THAT(output, HasSubstr("9 command lines accepted by kvspan, 8 addresses resolved; all checks passed"))
      << output;
  std::printf("%s", output.c_str());
}

TEST(DeployCheckTest, CheckFlagsExitsZeroWithoutStartingAndTwoOnABadFlag) {
  // Port 1 would need root to bind: exit 0 shows nothing was started.
  auto [ok_code, ok_output] = RunCommand(kBinary + " serve --listen 127.0.0.1:1 --model /nonexistent --check-flags");
  EXPECT_EQ(ok_code, 0) << ok_output;
  EXPECT_THAT(ok_output, HasSubstr("kvspan serve: flags ok"));
  auto [bad_code, bad_output] = RunCommand(kBinary + " serve --check-flags --listen 127.0.0.1:1 --no-such-flag 1");
  EXPECT_EQ(bad_code, 2) << bad_output;
  EXPECT_THAT(bad_output, HasSubstr("unknown flag --no-such-flag"));
  for (const char* role : {"prefill", "decode", "frontend"}) {
    auto [role_code, role_output] =
        RunCommand(absl::StrCat(kBinary, " ", role, " --listen 127.0.0.1:1 --model /nonexistent --check-flags"));
    EXPECT_EQ(role_code, 0) << role << ": " << role_output;
    EXPECT_THAT(role_output, HasSubstr(absl::StrCat("kvspan ", role, ": flags ok")));
    auto [bad_role_code, bad_role_output] =
        RunCommand(absl::StrCat(kBinary, " ", role, " --check-flags --no-such-flag 1"));
    EXPECT_EQ(bad_role_code, 2) << role << ": " << bad_role_output;
    EXPECT_THAT(bad_role_output, HasSubstr("unknown flag --no-such-flag"));
  }
  auto [value_code, value_output] = RunCommand(kBinary + " cachestore --check-flags --data /d --memory-budget-mib x");
  EXPECT_EQ(value_code, 2) << value_output;
  EXPECT_THAT(value_output, HasSubstr("flag --memory-budget-mib: 'x' is not an integer"));
  auto [store_code, store_output] = RunCommand(kBinary + " cachestore --data /nonexistent/d --check-flags");
  EXPECT_EQ(store_code, 0) << store_output;
  EXPECT_THAT(store_output, HasSubstr("kvspan cachestore: flags ok"));
}

// deploy/Dockerfile cannot be built here; what it names from the repository must exist.
TEST(DeployCheckTest, DockerfileCopySourcesAndRunScriptsExist) {
  absl::StatusOr<std::string> text = ReadFile(kSource + "/deploy/Dockerfile");
  ASSERT_TRUE(text.ok()) << text.status();
  const std::string joined = absl::StrReplaceAll(*text, {{"\\\n", " "}});
  int num_copies = 0;
  int num_scripts = 0;
  for (absl::string_view line : absl::StrSplit(joined, '\n')) {
    line = absl::StripLeadingAsciiWhitespace(line);
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (words.empty()) continue;
    if (words[0] == "COPY" && !absl::StartsWith(words[1], "--from=")) {
      for (size_t i = 1; i + 1 < words.size(); ++i) {  // the last word is the destination
        EXPECT_EQ(access((kSource + "/" + words[i]).c_str(), R_OK), 0) << "COPY source " << words[i];
        ++num_copies;
      }
    }
    if (words[0] == "RUN") {
      for (const std::string& word : words) {
        if (!absl::StartsWith(word, "./")) continue;
        EXPECT_EQ(access((kSource + "/" + word).c_str(), X_OK), 0) << "RUN script " << word;
        ++num_scripts;
      }
    }
  }
  EXPECT_EQ(num_copies, 2);  // . and models
  EXPECT_EQ(num_scripts, 2);  // tools/setup.sh and tools/build.sh
  EXPECT_THAT(*text, HasSubstr("ENTRYPOINT [\"/usr/local/bin/kvspan\"]"));
  EXPECT_THAT(*text, HasSubstr("COPY --from=build /src/build/node/kvspan /usr/local/bin/kvspan"));
}

}  // namespace
}  // namespace kvspan::tests
