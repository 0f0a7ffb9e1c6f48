// The register-tiled kernels of kernels::Linear for bf16 / fp16 / int8 weights, private to
// kernels/. Each ISA file (gemm_tiled_avx2.cc, gemm_tiled_avx512.cc) packs x
// once per call and supplies register tiles: a tile computes the dot products of up to 4
// rows of W with up to kMaxTileRowsX rows of x. RunTiles walks the tiles, splitting
// W's rows over the pool, and applies the epilogue (int8 scales, bias, beta).
#ifndef KVSPAN_KERNELS_CPU_GEMM_TILED_H_
#define KVSPAN_KERNELS_CPU_GEMM_TILED_H_

#include <cstdint>

#include "kernels/gemm.h"

namespace kvspan::kernels::internal {

inline constexpr int kMaxTileRowsW = 4;
inline constexpr int kMaxTileRowsX = 4;

// Prefetches the same columns kMaxTileRowsW rows further down W: the rows of the next
// tile, so that DRAM streams them while this tile computes. (A [*, 2048] bf16 matrix has
// 4 KB rows, too short for the hardware prefetchers to ramp up on: without this the
// m = 1 kernels read ~35% slower than sgemv reads fp32.) Past the end it is harmless.
inline void PrefetchNextTile(const void* w_row_at_c, int64_t row_bytes) {
  __builtin_prefetch(static_cast<const char*>(w_row_at_c) + kMaxTileRowsW * row_bytes);
}

// One call's operands after packing.
struct TiledOperands {
  const LinearParams* p = nullptr;
  const void* x = nullptr;  // [m, ldx] packed rows of x (format per ISA and weight format)
  int64_t ldx = 0;          // elements per packed row
  const float* x_scales = nullptr;  // [m] kInt8: s_x of each row; null otherwise
  int64_t x_row_bytes = 0;          // bytes of one packed row of x (for cache blocking)
};

// Writes dots[i * kMaxTileRowsW + r] = Σ_c x[i0 + i, c] · W[j0 + r, c] for i < MX, r < NW
// (the template sizes of the tile); for kInt8 the exact integer Σ q · code as float.
using TileFn = void (*)(const TiledOperands& b, int j0, int i0, float* dots);

// tiles[nw - 1][mx - 1] for nw in [1, 4], mx in [1, max_mx]. Computes p->y for all rows.
void RunTiles(const TiledOperands& b, const TileFn (&tiles)[kMaxTileRowsW][kMaxTileRowsX], int max_mx);

// The table RunTiles takes: fns[nw - 1][mx - 1] = &T<nw, mx>::Run for mx <= MaxMX.
template <template <int, int> class T, int MaxMX>
struct TileTable {
  TileFn fns[kMaxTileRowsW][kMaxTileRowsX] = {};
  constexpr TileTable() { Fill<1>(); }
  template <int NW>
  constexpr void Fill() {
    FillRow<NW, 1>();
    if constexpr (NW < kMaxTileRowsW) Fill<NW + 1>();
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
// thread_local: valid until this thread's next call. REQUIRES: ldx >= p.w.cols.
TiledOperands PackInt8Activations(const LinearParams& p, int64_t ldx, uint8_t flip);

// The kernels of each ISA. REQUIRES: p.w.format != kF32; the CPU supports the ISA.
void TiledLinearAvx2(const LinearParams& p);
// bf16_dot: bf16 weights through vdpbf16ps (CpuIsa::kAvx512Bf16Dot) rather than exactly.
void TiledLinearAvx512(const LinearParams& p, bool bf16_dot);

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CPU_GEMM_TILED_H_
