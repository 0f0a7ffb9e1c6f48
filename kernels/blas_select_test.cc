// ChooseBlasCore's every branch, on made-up CPUs and environments (the real start-up, with
// the re-execution, is tests/blas_startup_test.cc).
#include "kernels/blas_select.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::kernels {
namespace {

using ::testing::HasSubstr;

CpuFeatures Avx2Cpu() {
  CpuFeatures cpu;
  cpu.avx2 = cpu.fma = cpu.f16c = true;
  cpu.brand = "Test CPU";
  return cpu;
}

CpuFeatures Avx512Cpu() {
  CpuFeatures cpu = Avx2Cpu();
  cpu.avx512f = cpu.avx512bw = cpu.avx512vl = cpu.avx512_vnni = cpu.avx512_bf16 = true;
  cpu.amx_tile = cpu.amx_bf16 = cpu.amx_int8 = true;
  return cpu;
}

TEST(BlasSelectTest, Avx512CpuMisdetectedAsPrescottGetsSkylakeX) {
  const BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), {}, "Prescott");
  EXPECT_EQ(c.exec_core, "SkylakeX");
  EXPECT_EQ(c.expected_core, "SkylakeX");
  EXPECT_EQ(c.reason, "chosen: avx512f/bw/vl; OpenBLAS by itself detects this CPU as Prescott");
}

TEST(BlasSelectTest, Avx512WithoutBwOrVlGetsHaswell) {
  CpuFeatures cpu = Avx2Cpu();
  cpu.avx512f = true;  // Knights Landing style: no BW/VL
  const BlasCoreChoice c = ChooseBlasCore(cpu, {}, "Prescott");
  EXPECT_EQ(c.exec_core, "Haswell");
  EXPECT_THAT(c.reason, HasSubstr("chosen: avx2+fma"));
}

TEST(BlasSelectTest, Avx2CpuMisdetectedGetsHaswell) {
  const BlasCoreChoice c = ChooseBlasCore(Avx2Cpu(), {}, "Sandybridge");
  EXPECT_EQ(c.exec_core, "Haswell");
  EXPECT_EQ(c.expected_core, "Haswell");
}

TEST(BlasSelectTest, NoAvx2KeepsOpenBlasDetection) {
  CpuFeatures cpu;
  cpu.brand = "Old CPU";
  const BlasCoreChoice c = ChooseBlasCore(cpu, {}, "Nehalem");
  EXPECT_EQ(c.exec_core, "");
  EXPECT_EQ(c.expected_core, "");
  EXPECT_EQ(c.reason, "no avx2+fma: OpenBLAS's own detection");
  CpuFeatures avx2_only = cpu;
  avx2_only.avx2 = true;  // AVX2 without FMA: still nothing to pick
  EXPECT_EQ(ChooseBlasCore(avx2_only, {}, "Nehalem").exec_core, "");
}

TEST(BlasSelectTest, EqualOrBetterOwnDetectionIsKept) {
  for (const char* native : {"SkylakeX", "skylakex", "Cooperlake", "SapphireRapids"}) {
    const BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), {}, native);
    EXPECT_EQ(c.exec_core, "") << native;
    EXPECT_THAT(c.reason, HasSubstr("own detection kept")) << native;
  }
  EXPECT_EQ(ChooseBlasCore(Avx2Cpu(), {}, "Haswell").exec_core, "");
  EXPECT_EQ(ChooseBlasCore(Avx2Cpu(), {}, "Zen").exec_core, "");
  // Haswell kernels on an AVX-512 CPU are below SkylakeX's.
  EXPECT_EQ(ChooseBlasCore(Avx512Cpu(), {}, "Haswell").exec_core, "SkylakeX");
}

TEST(BlasSelectTest, UserCoreTypeIsRespected) {
  BlasEnvironment env;
  env.openblas_coretype = "Haswell";
  env.blas_core = "SkylakeX";  // OPENBLAS_CORETYPE wins over kvspan's own variable
  const BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), env, "Haswell");
  EXPECT_EQ(c.exec_core, "");
  EXPECT_EQ(c.expected_core, "Haswell");
  EXPECT_EQ(c.reason, "OPENBLAS_CORETYPE set by the user");
}

TEST(BlasSelectTest, NativeModeKeepsOpenBlasDetection) {
  BlasEnvironment env;
  env.blas_core = "native";
  const BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), env, "Prescott");
  EXPECT_EQ(c.exec_core, "");
  EXPECT_EQ(c.expected_core, "");
  EXPECT_EQ(c.reason, "KVSPAN_BLAS_CORE=native: OpenBLAS's own detection");
}

TEST(BlasSelectTest, AutoModeAndEmptyValueChooseFromFeatures) {
  for (const char* mode : {"auto", ""}) {
    BlasEnvironment env;
    env.blas_core = mode;
    EXPECT_EQ(ChooseBlasCore(Avx512Cpu(), env, "Prescott").exec_core, "SkylakeX") << mode;
  }
}

TEST(BlasSelectTest, NamedCoreIsExecutedUnlessAlreadyRunning) {
  BlasEnvironment env;
  env.blas_core = "Haswell";
  BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), env, "Cooperlake");
  EXPECT_EQ(c.exec_core, "Haswell");
  EXPECT_EQ(c.expected_core, "Haswell");
  EXPECT_EQ(c.reason, "KVSPAN_BLAS_CORE=Haswell");
  c = ChooseBlasCore(Avx512Cpu(), env, "haswell");
  EXPECT_EQ(c.exec_core, "");
  EXPECT_EQ(c.expected_core, "Haswell");
}

TEST(BlasSelectTest, ReexecMarkerPreventsSecondExecAndKeepsTheReason) {
  // What the re-executed process sees: our OPENBLAS_CORETYPE and the marker holding the
  // core OpenBLAS detected before the exec.
  BlasEnvironment env;
  env.openblas_coretype = "SkylakeX";
  env.reexec = "Prescott";
  BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), env, "SkylakeX");
  EXPECT_EQ(c.exec_core, "");
  EXPECT_EQ(c.expected_core, "SkylakeX");
  EXPECT_EQ(c.reason, "chosen: avx512f/bw/vl; OpenBLAS by itself detects this CPU as Prescott");
  // Even if OpenBLAS did not take the core, there is no second exec.
  c = ChooseBlasCore(Avx512Cpu(), env, "Prescott");
  EXPECT_EQ(c.exec_core, "");
  env.blas_core = "Haswell";
  env.openblas_coretype = "Haswell";
  c = ChooseBlasCore(Avx512Cpu(), env, "Haswell");
  EXPECT_EQ(c.exec_core, "");
  EXPECT_EQ(c.reason, "KVSPAN_BLAS_CORE=Haswell");
}

TEST(BlasSelectTest, StartupLineSaysWhatRunsAndWhy) {
  const BlasCoreChoice c = ChooseBlasCore(Avx512Cpu(), {}, "Prescott");
  EXPECT_EQ(BlasStartupLine(Avx512Cpu(), c, "SkylakeX", ""),
            "CPU Test CPU: avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 "
            "amx_tile amx_bf16 amx_int8; OpenBLAS core SkylakeX (chosen: avx512f/bw/vl; "
            "OpenBLAS by itself detects this CPU as Prescott)");
  EXPECT_THAT(BlasStartupLine(Avx512Cpu(), c, "Prescott", ""),
              HasSubstr("; asked for SkylakeX, OpenBLAS runs Prescott"));
  EXPECT_THAT(BlasStartupLine(Avx512Cpu(), c, "skylakex", "a note"),
              ::testing::EndsWith("Prescott); a note"));
}

}  // namespace
}  // namespace kvspan::kernels
