// Which instruction set kvspan's own matrix kernels (gemm.h, for bf16 / fp16 / int8
// weights) run with, chosen once per process from the CPU's features (common/cpu_features.h)
// and the environment, so that one binary runs on an AVX2-only machine and uses AVX-512
// where it exists.
//
// Environment:
//   KVSPAN_CPU_ISA   auto (default or unset): amx when the CPU has AVX-512 (below) and AMX
//                    (amx_tile, amx_bf16, amx_int8, with Linux's permission for the tile
//                    state), else avx512 when it has all of avx512f, bw, vl, bf16 and vnni,
//                    else avx2;
//                    avx2: the AVX2+FMA+F16C kernels (the build's floor) even on an AVX-512 CPU;
//                    avx512: the AVX-512 kernels without AMX; says so when the CPU lacks
//                    AVX-512 (then avx2 runs);
//                    amx: as auto, but says so when the CPU lacks AMX (then the best of the
//                    others runs);
//                    avx512-bf16dot: avx512, but bf16 weights through vdpbf16ps with x
//                    rounded to bf16 (never chosen by auto: see kAvx512Bf16Dot).
#ifndef KVSPAN_KERNELS_CPU_ISA_H_
#define KVSPAN_KERNELS_CPU_ISA_H_

#include <string>

#include "absl/strings/string_view.h"
#include "common/cpu_features.h"

namespace kvspan::kernels {

inline constexpr char kCpuIsaEnv[] = "KVSPAN_CPU_ISA";

enum class CpuIsa {
  kAvx2,    // AVX2 + FMA + F16C: bf16/fp16 converted to fp32, FMA; int8 by vpmaddubsw
  kAvx512,  // AVX-512 F/BW/VL + VNNI (vpdpbusd); bf16 weights converted exactly, FMA
  // kAvx512 with bf16 weights by vdpbf16ps on x rounded to bf16: fewer instructions per
  // weight, but a relative error up to 2^-8 per element of x. On models/kvspan-brown that
  // moves logits by up to 2.6e-2 from PyTorch's fp32 (the exact kernels: 1.2e-5), more
  // than the smallest greedy top-1 margin of its reference prompts (5.6e-3); its perplexity
  // and top-1 agreement there are in docs/quality.md ("Weight formats"). Set per model by
  // model::ModelOptions::cpu_isa, or for the process by KVSPAN_CPU_ISA=avx512-bf16dot.
  kAvx512Bf16Dot,
  // kAvx512, with the prefill GEMM of bf16 and int8 weights (from kAmxGemmMinRows rows of x,
  // kernels/cpu/gemm_tiled.h) on AMX tiles: int8 by tdpbssd (the same exact integer sums, so
  // the same values as kAvx512), bf16 by tdpbf16ps on x split exactly into three bf16 parts
  // (x = hi + mid + lo; products of bf16 values are exact in fp32, so only fp32
  // accumulation error, as the exact kernels).
  kAmx,
};

// "avx2", "avx512", "avx512-bf16dot", "amx".
absl::string_view CpuIsaName(CpuIsa isa);

// Whether `cpu` can run the kernels of `isa`. kAvx2 is the build's floor: always true.
bool CpuSupportsIsa(const CpuFeatures& cpu, CpuIsa isa);

struct CpuIsaChoice {
  CpuIsa isa = CpuIsa::kAvx2;
  std::string reason;  // for the start-up line: "auto", "KVSPAN_CPU_ISA=avx2", ...
};

// The decision, a pure function of the CPU and the variable's value (null = unset).
// An unknown value counts as auto and says so in `reason`.
CpuIsaChoice ChooseCpuIsa(const CpuFeatures& cpu, const char* env_value);

// ChooseCpuIsa(DetectCpuFeatures(), getenv(KVSPAN_CPU_ISA)), decided on the first call and
// fixed for the process. Thread-safe.
const CpuIsaChoice& SelectedCpuIsa();

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CPU_ISA_H_
