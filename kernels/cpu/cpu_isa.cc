#include "kernels/cpu_isa.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace kvspan::kernels {

absl::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx512Bf16Dot:
      return "avx512-bf16dot";
  }
  return "unknown";
}

bool CpuSupportsIsa(const CpuFeatures& cpu, CpuIsa isa) {
  if (isa == CpuIsa::kAvx2) return true;
  return cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512_bf16 && cpu.avx512_vnni;
}

CpuIsaChoice ChooseCpuIsa(const CpuFeatures& cpu, const char* env_value) {
  const absl::string_view value = env_value == nullptr ? "auto" : env_value;
  const bool has_avx512 = CpuSupportsIsa(cpu, CpuIsa::kAvx512);
  const CpuIsa best = has_avx512 ? CpuIsa::kAvx512 : CpuIsa::kAvx2;
  if (value == "auto" || value.empty()) return {best, "auto"};
  if (value == "avx2") return {CpuIsa::kAvx2, "KVSPAN_CPU_ISA=avx2"};
  for (CpuIsa isa : {CpuIsa::kAvx512, CpuIsa::kAvx512Bf16Dot}) {
    if (value != CpuIsaName(isa)) continue;
    if (has_avx512) return {isa, absl::StrCat("KVSPAN_CPU_ISA=", value)};
    return {CpuIsa::kAvx2, absl::StrCat("KVSPAN_CPU_ISA=", value, ", but this CPU lacks avx512f/bw/vl/bf16/vnni")};
  }
  return {best, absl::StrCat("auto; unknown KVSPAN_CPU_ISA=", value, " ignored")};
}

const CpuIsaChoice& SelectedCpuIsa() {
  static const CpuIsaChoice* const choice =
      new CpuIsaChoice(ChooseCpuIsa(DetectCpuFeatures(), std::getenv(kCpuIsaEnv)));
  return *choice;
}

}  // namespace kvspan::kernels
