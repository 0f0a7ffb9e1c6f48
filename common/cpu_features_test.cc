// DetectCpuFeatures against an independent reference: the flags Linux reports in
// /proc/cpuinfo (the kernel clears a flag whose register state it does not enable, as
// the detection does with XCR0).
#include "common/cpu_features.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace kvspan {
namespace {

// The text after ':' of the first processor's line `name` in /proc/cpuinfo; empty if there
// is none (unreadable, or not x86).
std::string ProcCpuinfoField(const std::string& name) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) == 0) return line.substr(line.find(':') + 1);
  }
  return "";
}

// The first processor's "flags" line of /proc/cpuinfo, as a set; empty if unreadable.
std::set<std::string> ProcCpuinfoFlags() {
  std::istringstream words(ProcCpuinfoField("flags"));
  std::set<std::string> flags;
  for (std::string w; words >> w;) flags.insert(w);
  return flags;
}

TEST(CpuFeaturesTest, AgreesWithProcCpuinfo) {
  const std::set<std::string> flags = ProcCpuinfoFlags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line";
  const CpuFeatures& f = DetectCpuFeatures();
  const std::pair<const char*, bool> named[] = {
      {"avx2", f.avx2}, {"fma", f.fma}, {"f16c", f.f16c}, {"avx512f", f.avx512f},
      {"avx512bw", f.avx512bw}, {"avx512vl", f.avx512vl}, {"avx512_vnni", f.avx512_vnni},
      {"avx512_bf16", f.avx512_bf16}, {"avx512_fp16", f.avx512_fp16},
      {"amx_tile", f.amx_tile}, {"amx_bf16", f.amx_bf16}, {"amx_int8", f.amx_int8},
  };
  for (const auto& [name, detected] : named) {
    EXPECT_EQ(detected, flags.count(name) == 1) << name << " in " << ToString(f);
  }
}

TEST(CpuFeaturesTest, VendorIsProcCpuinfos) {
  std::string vendor;
  std::istringstream(ProcCpuinfoField("vendor_id")) >> vendor;
  if (vendor.empty()) GTEST_SKIP() << "no /proc/cpuinfo vendor_id line";
  EXPECT_EQ(DetectCpuFeatures().vendor, vendor);
}

TEST(CpuFeaturesTest, ImpliedFeaturesHold) {
  const CpuFeatures& f = DetectCpuFeatures();
  EXPECT_TRUE(!f.avx512f || (f.avx2 && f.fma && f.f16c)) << ToString(f);
  for (bool sub : {f.avx512bw, f.avx512vl, f.avx512_vnni, f.avx512_bf16, f.avx512_fp16}) {
    EXPECT_TRUE(!sub || f.avx512f) << ToString(f);
  }
  EXPECT_TRUE(!(f.amx_bf16 || f.amx_int8) || f.amx_tile) << ToString(f);
  EXPECT_FALSE(f.brand.empty());
}

TEST(CpuFeaturesTest, StableAcrossCalls) {
  const CpuFeatures& a = DetectCpuFeatures();
  const CpuFeatures& b = DetectCpuFeatures();
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(ToString(a), ToString(b));
  EXPECT_EQ(a.brand, b.brand);
}

TEST(CpuFeaturesTest, ToStringNamesPresentFeaturesInOrder) {
  CpuFeatures f;
  EXPECT_EQ(ToString(f), "none");
  f.avx2 = f.fma = f.avx512f = f.amx_int8 = true;
  EXPECT_EQ(ToString(f), "avx2 fma avx512f amx_int8");
}

}  // namespace
}  // namespace kvspan
