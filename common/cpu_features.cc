#include "common/cpu_features.h"

#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kvspan {
namespace {

#if defined(__x86_64__)
struct Regs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

// cpuid leaf/subleaf; all zeros when the leaf is beyond the maximum the CPU reports.
Regs Cpuid(uint32_t leaf, uint32_t subleaf) {
  Regs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return Regs{};
  return r;
}

bool Bit(uint32_t reg, int bit) { return (reg >> bit) & 1u; }

// XCR0: which register state the OS saves on context switches. REQUIRES: OSXSAVE.
uint64_t Xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// Linux's AMX opt-in (arch/x86/include/uapi/asm/prctl.h). Requesting an already granted
// permission succeeds again, so the request doubles as the check.
bool LinuxPermitsAmx() {
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr unsigned long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

std::string Brand() {
  if (Cpuid(0x80000000u, 0).eax < 0x80000004u) return "";
  char text[49] = {};
  for (uint32_t i = 0; i < 3; ++i) {
    const Regs r = Cpuid(0x80000002u + i, 0);
    std::memcpy(text + 16 * i, &r, 16);
  }
  std::string brand(text);
  const size_t begin = brand.find_first_not_of(' ');
  if (begin == std::string::npos) return "";
  return brand.substr(begin, brand.find_last_not_of(' ') - begin + 1);
}

std::string Vendor() {
  const Regs r = Cpuid(0, 0);
  char text[13] = {};
  std::memcpy(text, &r.ebx, 4);
  std::memcpy(text + 4, &r.edx, 4);
  std::memcpy(text + 8, &r.ecx, 4);
  return text;
}

CpuFeatures Detect() {
  CpuFeatures f;
  f.vendor = Vendor();
  f.brand = Brand();
  const Regs l1 = Cpuid(1, 0);
  if (!Bit(l1.ecx, 27)) return f;  // no OSXSAVE: the OS enables no AVX state
  const uint64_t xcr0 = Xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;               // SSE + AVX (ymm) state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, zmm0-15 high, zmm16-31
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;       // XTILECFG + XTILEDATA
  const bool avx = os_avx && Bit(l1.ecx, 28);
  const Regs l7 = Cpuid(7, 0);
  const Regs l7s1 = l7.eax >= 1 ? Cpuid(7, 1) : Regs{};
  f.fma = avx && Bit(l1.ecx, 12);
  f.f16c = avx && Bit(l1.ecx, 29);
  f.avx2 = avx && Bit(l7.ebx, 5);
  f.avx512f = os_avx512 && Bit(l7.ebx, 16);
  f.avx512bw = f.avx512f && Bit(l7.ebx, 30);
  f.avx512vl = f.avx512f && Bit(l7.ebx, 31);
  f.avx512_vnni = f.avx512f && Bit(l7.ecx, 11);
  f.avx512_bf16 = f.avx512f && Bit(l7s1.eax, 5);
  f.avx512_fp16 = f.avx512f && Bit(l7.edx, 23);
  if (os_amx && Bit(l7.edx, 24) && LinuxPermitsAmx()) {
    f.amx_tile = true;
    f.amx_bf16 = Bit(l7.edx, 22);
    f.amx_int8 = Bit(l7.edx, 25);
  }
  return f;
}
#else
CpuFeatures Detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& DetectCpuFeatures() {
  static const CpuFeatures* const features = [] {
    auto* f = new CpuFeatures(Detect());
    if (f->brand.empty()) f->brand = "unknown CPU";
    return f;
  }();
  return *features;
}

std::string ToString(const CpuFeatures& f) {
  const std::pair<const char*, bool> named[] = {
      {"avx2", f.avx2},           {"fma", f.fma},
      {"f16c", f.f16c},           {"avx512f", f.avx512f},
      {"avx512bw", f.avx512bw},   {"avx512vl", f.avx512vl},
      {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16},
      {"avx512_fp16", f.avx512_fp16}, {"amx_tile", f.amx_tile},
      {"amx_bf16", f.amx_bf16},   {"amx_int8", f.amx_int8},
  };
  std::string out;
  for (const auto& [name, present] : named) {
    if (!present) continue;
    if (!out.empty()) out += ' ';
    out += name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace kvspan
