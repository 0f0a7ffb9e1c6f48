// The register-tiled kernels of kernels::Linear for bf16 / fp16 / int8 weights, private to
// kernels/. Each ISA file (gemm_tiled_avx2.cc, gemm_tiled_avx512.cc) packs x
// once per call and supplies register tiles: a tile computes the dot products of up to 4
// rows of W with up to kMaxTileRowsX rows of x. RunTiles walks the tiles, splitting
// W's rows over the pool, and applies the epilogue (StoreDots: int8 scales, bias, beta). On
// AVX-512 the prefill GEMM of gemm_panels_avx512.cc takes over from kPanelGemmMinRows rows of
// x; on AVX2, bf16 / fp16 from 32 rows go through gemm_tiled_avx2.cc's BlockedFloatGemm.
#ifndef KVSPAN_KERNELS_CPU_GEMM_TILED_H_
#define KVSPAN_KERNELS_CPU_GEMM_TILED_H_

#include <immintrin.h>

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "kernels/gemm.h"

// The AVX-512 kernels' function-level target (gemm_tiled_avx512.cc, gemm_panels_avx512.cc):
// only functions so marked contain AVX-512 code, so the binary runs on an AVX2-only CPU.
#define KVSPAN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")))
#define KVSPAN_AVX512_INLINE \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni"), always_inline)) static inline
#define KVSPAN_AVX512_LAMBDA \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni"), always_inline))

namespace kvspan::kernels::internal {

// x rounded to bf16 the way FloatToBf16 does (nearest even; NaN kept quiet), 16 at a time.
KVSPAN_AVX512_INLINE __m256i FloatToBf16x16(__m512 f) {
  const __m512i x = _mm512_castps_si512(f);
  const __m512i rounded = _mm512_add_epi32(
      x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1))));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i nan_bits = _mm512_or_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, _mm512_srli_epi32(rounded, 16), nan_bits));
}

// fn(t) for t in [0, n): over `pool`, or on the calling thread when it is null.
inline void RunTasks(ThreadPool* pool, int64_t n, absl::FunctionRef<void(int64_t)> fn, int64_t grain = 1) {
  if (pool != nullptr) {
    pool->ParallelFor(n, fn, grain);
  } else {
    for (int64_t t = 0; t < n; ++t) fn(t);
  }
}

inline constexpr int kMaxTileRowsW = 4;
inline constexpr int kMaxTileRowsX = 4;

// Prefetches the same columns kMaxTileRowsW rows further down W: the rows of the next
// tile, so that DRAM streams them while this tile computes. (A [*, 2048] bf16 matrix has
// 4 KB rows, too short for the hardware prefetchers to ramp up on: without this the
// m = 1 kernels read ~35% slower than sgemv reads fp32.) Past the end it is harmless.
inline void PrefetchNextTile(const void* w_row_at_c, int64_t row_bytes) {
  __builtin_prefetch(static_cast<const char*>(w_row_at_c) + kMaxTileRowsW * row_bytes);
}

// Whether a one-row call takes an ISA's rows tile (W's rows one after another, each reading
// all of packed x): when its packed x row fits in half the 32 KB L1D (linear_bench at m = 1,
// bf16 on AVX-512: 16384x2048 (8 KB of x) faster by rows, 2048x8192 (32 KB) slower).
inline bool UseRowsTile(const LinearParams& p, int64_t x_row_bytes) { return p.m == 1 && x_row_bytes <= (16 << 10); }

// One call's operands after packing.
struct TiledOperands {
  const LinearParams* p = nullptr;
  const void* x = nullptr;  // [m, ldx] packed rows of x (format per ISA and weight format)
  int64_t ldx = 0;          // elements per packed row
  const float* x_scales = nullptr;  // [m] kInt8: s_x of each row; null otherwise
  int64_t x_row_bytes = 0;          // bytes of one packed row of x (for cache blocking)
  const int32_t* x_sums = nullptr;     // kInt4: see PackInt4Activations
};

// Writes dots[i * kMaxTileRowsW + r] = Σ_c x[i0 + i, c] · W[j0 + r, c] for i < MX, r < NW
// (the template sizes of the tile); for kInt8 the exact integer Σ q · code as float.
using TileFn = void (*)(const TiledOperands& b, int j0, int i0, float* dots);

// The epilogue of a tile: y[i0 + i, j0 + r] for i < mx, r < nw from dots[i * dots_stride +
// r] (TileFn's layout at the default stride): times s_x (and s_w) for int8 / int4, plus
// bias, plus beta · y (one fma).
void StoreDots(const TiledOperands& b, int j0, int i0, int nw, int mx, const float* dots,
               int dots_stride = kMaxTileRowsW);

// The most rows of W one tile of RunPanelTiles computes (kInt4's 16-row panels).
inline constexpr int kMaxGridRowsW = 16;

// Computes p->y for all rows: W's rows split over the pool in tasks of whole tiles, x in
// chunks that stay in L2, each tile's dots through StoreDots. tiles[nw - 1][mx - 1] for nw in
// [1, 4] rows of W (fewer than 4 only at n), mx in [1, max_mx] rows of x.
void RunTiles(const TiledOperands& b, const TileFn (&tiles)[kMaxTileRowsW][kMaxTileRowsX], int max_mx);

// RunTiles for tiles of whole panels of rows_w rows of W: tiles[mx - 1] for mx in [1,
// max_mx], each writing dots[i * rows_w + r] for every r < rows_w (rows past n are computed
// and dropped). REQUIRES: rows_w <= kMaxGridRowsW, max_mx <= kMaxTileRowsX.
void RunPanelTiles(const TiledOperands& b, int rows_w, const TileFn* tiles, int max_mx);

// The table RunTiles takes: fns[nw - 1][mx - 1] = &T<nw, mx>::Run for nw <= MaxNW, mx <= MaxMX
// (Fn and MaxNW for tables of other tile functions).
template <template <int, int> class T, int MaxMX, typename Fn = TileFn, int MaxNW = kMaxTileRowsW>
struct TileTable {
  Fn fns[MaxNW][kMaxTileRowsX] = {};
  constexpr TileTable() { Fill<1>(); }
  template <int NW>
  constexpr void Fill() {
    FillRow<NW, 1>();
    if constexpr (NW < MaxNW) Fill<NW + 1>();
  }
  template <int NW, int MX>
  constexpr void FillRow() {
    fns[NW - 1][MX - 1] = &T<NW, MX>::Run;
    if constexpr (MX < MaxMX) FillRow<NW, MX + 1>();
  }
};

// The int8 operands of one call: each row of p.x quantized by QuantizeRowInt8 into ldx
// bytes (zero past k), every code XOR `flip` (0x80 turns the signed q into the unsigned
// q + 128 that vpdpbusd takes; 0 keeps it), and its scale in x_scales. The storage is
// thread_local: valid until this thread's next call. Rows from p.m to `rows` (when more) are
// zero (for kernels that run whole blocks of rows). REQUIRES: ldx >= p.w.cols.
TiledOperands PackInt8Activations(const LinearParams& p, int64_t ldx, uint8_t flip, int rows = 0);

// The int4 operands of the tiles (AVX2 and AVX-512) and of the AVX-512 prefill GEMM:
// PackInt8Activations' q (ldx = 64 ceil(k / 64), flip 0) and, in x_sums ([m, ldx / 32]
// int32, thread_local as the codes), -8 · Σ q over each 32 columns: what turns Σ q · (code +
// 8) of the stored nibbles into Σ q · code for a group of 32 (|.| <= 8 · 32 · 127).
TiledOperands PackInt4Activations(const LinearParams& p);

// Rows of p.x as bf16 into dst ([m, ldx], FloatToBf16's rounding, zero past k), on
// AVX-512. REQUIRES: ldx >= k; the CPU has AVX-512.
void RoundRowsToBf16(const LinearParams& p, int64_t ldx, uint16_t* dst);

// The prefill GEMM (gemm_panels_avx512.cc) for bf16 (dot: vdpbf16ps on x rounded to bf16),
// int8 and int4 weights, which TiledLinearAvx512 takes from this many rows of x (below:
// its tiles were as fast or faster in linear_bench).
inline constexpr int kPanelGemmMinRows = 32;
void PanelGemmBf16(const LinearParams& p, bool dot);
void PanelGemmInt8(const LinearParams& p);
void PanelGemmInt4(const LinearParams& p);

// The prefill GEMM on AMX tiles (gemm_amx.cc; CpuIsa::kAmx) for bf16 (exact: x
// split into three bf16 parts) and int8 weights, from this many rows of x. REQUIRES: the CPU
// supports CpuIsa::kAmx.
inline constexpr int kAmxGemmMinRows = 32;
void AmxGemmBf16(const LinearParams& p);
void AmxGemmInt8(const LinearParams& p);

// The kernels of each ISA. REQUIRES: p.w.format != kF32; the CPU supports the ISA.
void TiledLinearAvx2(const LinearParams& p);
// isa: kAvx512, kAvx512Bf16Dot (bf16 weights through vdpbf16ps rather than exactly) or kAmx
// (the AMX GEMM above from kAmxGemmMinRows rows of x).
void TiledLinearAvx512(const LinearParams& p, CpuIsa isa);

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CPU_GEMM_TILED_H_
