// The instruction-set features of the CPU this process runs on, read once by cpuid, with
// xgetbv for the operating system's support of the AVX / AVX-512 / AMX register state.
// Kernels and kernel libraries (OpenBLAS, kernels/blas_select.h) dispatch on it at run
// time, so one binary runs on an AVX2-only machine and uses AVX-512 where it exists.
#ifndef KVSPAN_COMMON_CPU_FEATURES_H_
#define KVSPAN_COMMON_CPU_FEATURES_H_

#include <string>

namespace kvspan {

// A feature is true only when the CPU reports it (cpuid) and the OS saves its registers
// (XCR0): a CPU with AVX-512 under an OS that does not enable the zmm state has
// avx512f == false. Field names are /proc/cpuinfo's flag names. All false off x86-64.
struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  // AMX also needs Linux's per-process permission for the tile data state
  // (arch_prctl(ARCH_REQ_XCOMP_PERM), Linux >= 5.16): false when the kernel refuses it.
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
  std::string vendor;  // cpuid leaf 0's vendor ("AuthenticAMD", "GenuineIntel"); "" if none
  std::string brand;  // cpuid's brand string, trimmed ("AMD EPYC"); "unknown CPU" if none
};

// The features of this CPU, detected on the first call. The reference lives for the
// process. Thread-safe.
// NOTE: the first call asks Linux for AMX tile-data permission when the CPU has AMX (the
// only way to learn whether AMX may be used); that grows the signal frame the kernel
// requires of an alternate signal stack. kvspan's AMX kernels (kernels/cpu_isa.h's amx) run only
// where this returned amx_tile.
const CpuFeatures& DetectCpuFeatures();

// The present features by name, space-separated, in the field order above ("avx2 fma
// f16c avx512f ..."); "none" when none is present. Thread-safe.
std::string ToString(const CpuFeatures& features);

}  // namespace kvspan

#endif  // KVSPAN_COMMON_CPU_FEATURES_H_
