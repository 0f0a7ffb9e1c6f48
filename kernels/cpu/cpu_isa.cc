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
    case CpuIsa::kAmx:
      return "amx";
  }
  return "unknown";
}

bool CpuSupportsIsa(const CpuFeatures& cpu, CpuIsa isa) {
  if (isa == CpuIsa::kAvx2) return true;
  const bool avx512 = cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512_bf16 && cpu.avx512_vnni;
  if (isa != CpuIsa::kAmx) return avx512;
  return avx512 && cpu.amx_tile && cpu.amx_bf16 && cpu.amx_int8;
}

CpuIsaChoice ChooseCpuIsa(const CpuFeatures& cpu, const char* env_value) {
  const absl::string_view value = env_value == nullptr ? "auto" : env_value;
  const bool has_avx512 = CpuSupportsIsa(cpu, CpuIsa::kAvx512);
  const CpuIsa without_amx = has_avx512 ? CpuIsa::kAvx512 : CpuIsa::kAvx2;
  const CpuIsa best = CpuSupportsIsa(cpu, CpuIsa::kAmx) ? CpuIsa::kAmx : without_amx;
  if (value == "auto" || value.empty()) return {best, "auto"};
  if (value == "avx2") return {CpuIsa::kAvx2, "KVSPAN_CPU_ISA=avx2"};
  if (value == CpuIsaName(CpuIsa::kAmx)) {
    if (best == CpuIsa::kAmx) return {best, "KVSPAN_CPU_ISA=amx"};
    return {best, "KVSPAN_CPU_ISA=amx, but this CPU lacks amx_tile/bf16/int8 (or Linux refused the tile state)"};
  }
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
