#include "kernels/blas_select.h"

#include <cblas.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu_isa.h"

namespace kvspan::kernels {
namespace {

std::optional<std::string> Getenv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

// How capable an OpenBLAS x86-64 core's fp32 kernels are, for "is OpenBLAS's own choice
// already as good as ours". Names not listed (Prescott, Nehalem, Sandybridge, ... and any
// this table does not know) rank 0.
int CoreRank(const std::string& core) {
  constexpr std::pair<const char*, int> kRanks[] = {
      {"Haswell", 1}, {"Zen", 1}, {"SkylakeX", 2}, {"Cooperlake", 3}, {"SapphireRapids", 4},
  };
  for (const auto& [name, rank] : kRanks) {
    if (absl::EqualsIgnoreCase(core, name)) return rank;
  }
  return 0;
}

BlasCoreChoice ChooseAuto(const CpuFeatures& cpu, const std::string& native_core) {
  const char* pick = nullptr;
  const char* why = nullptr;
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vl) {
    pick = "SkylakeX";
    why = "avx512f/bw/vl";
  } else if (cpu.avx2 && cpu.fma) {
    pick = "Haswell";
    why = "avx2+fma";
  } else {
    return {"", "", "no avx2+fma: OpenBLAS's own detection"};
  }
  if (CoreRank(native_core) >= CoreRank(pick)) {
    return {"", "", absl::StrCat("OpenBLAS's own detection kept: ", why, ", ", native_core,
                                 " is ", pick, " or better")};
  }
  return {pick, pick,
          absl::StrCat("chosen: ", why, "; OpenBLAS by itself detects this CPU as ", native_core)};
}

}  // namespace

BlasEnvironment ReadBlasEnvironment() {
  return {Getenv(kOpenBlasCoreTypeEnv), Getenv(kBlasCoreEnv), Getenv(kBlasReexecEnv)};
}

BlasCoreChoice ChooseBlasCore(const CpuFeatures& cpu, const BlasEnvironment& env,
                              const std::string& native_core) {
  if (env.reexec.has_value()) {
    // The re-executed process: OPENBLAS_CORETYPE is ours, and the core OpenBLAS chose by
    // itself was passed along. Same decision, never a second exec.
    BlasEnvironment before = env;
    before.openblas_coretype.reset();
    before.reexec.reset();
    BlasCoreChoice choice = ChooseBlasCore(cpu, before, *env.reexec);
    choice.exec_core.clear();
    return choice;
  }
  if (env.openblas_coretype.has_value()) {
    return {"", *env.openblas_coretype, "OPENBLAS_CORETYPE set by the user"};
  }
  const std::string mode = env.blas_core.value_or("auto");
  if (mode.empty() || mode == "auto") return ChooseAuto(cpu, native_core);
  if (mode == "native") return {"", "", "KVSPAN_BLAS_CORE=native: OpenBLAS's own detection"};
  const bool running = absl::EqualsIgnoreCase(mode, native_core);
  return {running ? "" : mode, mode, absl::StrCat("KVSPAN_BLAS_CORE=", mode)};
}

std::string BlasCoreName() {
  const char* name = openblas_get_corename();
  return name == nullptr ? "unknown" : std::string(absl::StripAsciiWhitespace(name));
}

std::string BlasStartupLine(const CpuFeatures& cpu, const BlasCoreChoice& choice,
                            const std::string& running_core, const std::string& note) {
  std::string line = absl::StrCat("CPU ", cpu.brand, ": ", ToString(cpu), "; OpenBLAS core ",
                                  running_core, " (", choice.reason, ")");
  if (!choice.expected_core.empty() && !absl::EqualsIgnoreCase(choice.expected_core, running_core)) {
    absl::StrAppend(&line, "; asked for ", choice.expected_core, ", OpenBLAS runs ", running_core);
  }
  if (!note.empty()) absl::StrAppend(&line, "; ", note);
  return line;
}

std::string SelectBlasCoreAtStartup(const char* program, char** argv) {
  const CpuFeatures& cpu = DetectCpuFeatures();
  const std::string native_core = BlasCoreName();
  BlasCoreChoice choice = ChooseBlasCore(cpu, ReadBlasEnvironment(), native_core);
  std::string note;
  if (!choice.exec_core.empty()) {
    setenv(kOpenBlasCoreTypeEnv, choice.exec_core.c_str(), /*overwrite=*/1);
    setenv(kBlasReexecEnv, native_core.c_str(), /*overwrite=*/1);
    std::fflush(nullptr);  // nothing buffered may be lost or written twice
    execv("/proc/self/exe", argv);
    const int error = errno;
    unsetenv(kOpenBlasCoreTypeEnv);
    unsetenv(kBlasReexecEnv);
    note = absl::StrCat("re-executing with OPENBLAS_CORETYPE=", choice.exec_core, " failed (",
                        std::strerror(error), "), so OpenBLAS's own core runs");
    choice.expected_core.clear();
  }
  std::string line = BlasStartupLine(cpu, choice, BlasCoreName(), note);
  const CpuIsaChoice& isa = SelectedCpuIsa();
  absl::StrAppend(&line, "; matrix kernels ", CpuIsaName(isa.isa), " (", isa.reason, ")");
  std::fprintf(stderr, "%s: %s\n", program, line.c_str());
  return line;
}

}  // namespace kvspan::kernels
