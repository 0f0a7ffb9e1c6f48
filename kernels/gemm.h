// Matrix products in the layout of linear layers: weights are [out_features, in_features]
// row-major (as in safetensors checkpoints), so y = x · Wᵀ, with W in any format of
// weight_matrix.h.
//
// Paths (kernels/cpu/gemm.cc dispatches; the ISA is kernels/cpu_isa.h's choice):
//   kF32        OpenBLAS: cblas_sgemv for one row (decode), cblas_sgemm otherwise.
//   kBF16/kF16  kvspan's register-tiled kernels (gemm_tiled_*.cc: 4 rows of W × up to 4 rows
//               of x per tile, W's rows split over `pool`) for every m. On avx2 one order
//               of sums serves every m, so a row's result does not depend on the batch
//               around it (blocks of W converted to fp32 for cblas_sgemm above 16 rows were
//               faster at prefill, 79-127 against 74-90 GFLOP/s at m = 512 on Zen 3, but
//               rounded otherwise, and greedy outputs changed with the batch):
//                 avx512: bf16 converted exactly (shift / mask of 32-bit lanes), fp16 by
//                 vcvtph2ps, FMA with fp32 x: only fp32 accumulation error. bf16 at m = 1
//                 with k <= 4096: the tile's rows one after another (one stream of W).
//                 bf16 at m >= 32 (prefill): panels of 32 rows of W repacked per call (the
//                 pairs of columns side by side), a register tile of 12 rows of x × 32
//                 outputs, no horizontal sums; exact as above, or vdpbf16ps below.
//                 avx2: bf16 (a 16-bit shift) and fp16 (vcvtph2ps) converted, FMA: the same;
//                 from m = 32 W converted once per 128 rows of x into fp32 blocks (the
//                 same sums in the same order, so the same bits as the tiles).
//                 avx512-bf16dot (opt-in, cpu_isa.h): bf16 by vdpbf16ps with x rounded to
//                 bf16 (round to nearest even, 8 significant bits: a relative error <= 2^-8
//                 per element of x, so |y - exact| <= 2^-8 · Σ|x·w| plus fp32 accumulation;
//                 products of two bf16 values are exact in fp32). Its m = 1 tile reads the
//                 rows one after another too (x is k bf16, within half the L1 up to k = 8192).
//   kInt8       x quantized per row by QuantizeRowInt8 (weight_matrix.h, the weights'
//               formula: s_x = max|x| / 127, q = round(x · 127 / max|x|)), and
//               y[i, j] = s_x[i] · scales[j] · Σ_c q[i, c] · codes[j, c] (+ bias), the
//               integer sum exact: tiled kernels for every m, avx512 by vpdpbusd (unsigned ×
//               signed: it takes q + 128 and subtracts 128 · row_sums[j]; at m = 1 and k <=
//               16384 the tile's rows one after another, one sequential stream of W), avx2 by vpmaddubsw on |q|
//               and sign-adjusted codes (at m = 1 with k <= 16384 also row after row). So
//               every m gives the same values.
//   kInt4       x quantized per row as for kInt8, y[i, j] = s_x[i] · Σ_g s_g[j] · Σ_{c in g}
//               q[i, c] · code[j, c] (+ bias): below m = 32 a tile is one panel of 16 rows
//               (weight_matrix.h: one sequential stream), a row per 32-bit lane: each
//               64-byte unit's nibbles unpacked (as code + 8, unsigned) and multiplied with
//               x's 4 q of their columns, broadcast, by vpdpbusd (avx512) or vpmaddubsw +
//               vpmaddwd (avx2, 16 rows in two registers; a unit's codes serve up to 3 rows of
//               x), each group's integer sum started from -8 · Σ q of its columns (so it is
//               Σ q · code exactly), converted to fp32 and accumulated with the 16 rows'
//               group scales by one FMA: fp32 rounding once per group (avx2: per 32 codes,
//               its 16-bit sums' bound), no horizontal sums.
//               avx512 at m >= 32 (prefill): 32 rows of W unpacked per call to bytes in
//               quads of columns, a register tile of 6 rows of x × 32 outputs, vpdpbusd of
//               each 32 codes into one exact integer sum per output, one FMA with the
//               group's scale: the bound of one rounding per 32 codes, and another rounding
//               order than the avx512 tile (which rounds once per group).
//   amx         (CpuIsa::kAmx) the avx512 kernels, but from kAmxGemmMinRows = 32 rows of x the
//               bf16 and int8 GEMMs on AMX tiles, W repacked per call into the same panels
//               (gemm_amx.cc): int8 by tdpbssd on signed q and codes, 32 rows of x x
//               32 outputs per block of four int32 tiles, the exact integer sums and the
//               int8 epilogue above (the same bits as avx512); bf16 by tdpbf16ps on x split
//               into hi + mid + lo (three bf16 whose sum is x exactly, so every product is
//               exact in fp32), the hi products in one fp32 tile and the mid / lo products in
//               another, added at the end: fp32 accumulation error only (gemm_test.cc's bound
//               (k + k / 32 + 4) · 2^-24), but another order than the avx512 tiles.
//   The int8 / int4 epilogue is one fma, fma(v, s_x · s_w, bias) (+ beta · y by another), in
//   the tiles and the panels alike, so that the rows of every m round the same.
// Thread-safe (OpenBLAS 0.3.21 serializes its own thread pool between callers).
#ifndef KVSPAN_KERNELS_GEMM_H_
#define KVSPAN_KERNELS_GEMM_H_

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/cpu_isa.h"
#include "kernels/weight_matrix.h"

namespace kvspan::kernels {

struct LinearParams {
  const float* x = nullptr;     // [m, k] row-major, contiguous rows
  WeightMatrix w;               // [n, k]: n = w.rows, k = w.cols
  const float* bias = nullptr;  // [n] added to every row of y; null = none
  float* y = nullptr;           // [m, n] row-major, contiguous rows
  int m = 0;                    // rows of x (stacked tokens), >= 1
  // 0: y = x·Wᵀ (+ bias). 1: y += x·Wᵀ (+ bias), used for residual connections.
  float beta = 0.0f;
  // Threads for kvspan's own kernels (non-fp32 weights); null = the calling thread only.
  // Borrowed for the call. OpenBLAS uses its own threads (SetBlasThreads).
  ThreadPool* pool = nullptr;
};

// y = x · Wᵀ + bias + beta * y with SelectedCpuIsa()'s kernels.
// REQUIRES: the shapes above; y does not alias x or the weights.
void Linear(const LinearParams& p);
// The same with the kernels of `isa` (tests run both). REQUIRES: the CPU supports `isa`.
void Linear(const LinearParams& p, CpuIsa isa);

// The specification (kernels/cpu/gemm_ref.cc), plain loops in double: y = x · Ŵᵀ + bias +
// beta · y with Ŵ the exact fp32 values of W (DequantizeRow); for kInt8, the formula above
// with x quantized by QuantizeRowInt8; for kInt4 the group sums above, in double.
void LinearRef(const LinearParams& p);

// Sets the number of threads OpenBLAS uses in all later calls (process-wide).
// REQUIRES: num_threads >= 1.
void SetBlasThreads(int num_threads);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_GEMM_H_
