// The AVX-512 tiled kernels of kernels::Linear: bf16 weights converted to fp32
// exactly (or, for CpuIsa::kAvx512Bf16Dot, by vdpbf16ps with x rounded to bf16), fp16
// weights by vcvtph2ps, both with FMA; int8 weights by VNNI vpdpbusd. Only
// the functions marked KVSPAN_AVX512 contain AVX-512 code (function-level target
// attributes, not a file-wide -mavx512*): inline helpers and templates the rest of the
// file instantiates stay AVX2, so the binary still runs on an AVX2-only CPU, where
// SelectedCpuIsa() never picks this file's kernels.
#include <immintrin.h>

#include <vector>

#include "common/float16.h"
#include "kernels/cpu/gemm_tiled.h"

// GCC 12's _mm512_undefined_* (behind _mm512_reduce_add_*) read a variable on purpose
// uninitialized (avx512fintrin.h: `__m512 __Y = __Y;`) and warn at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define KVSPAN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")))

namespace kvspan::kernels::internal {
namespace {

// NOTE: every loop over a tile's W rows (NW) or x rows (MX) is unrolled by pragma: at -O2
// GCC keeps acc[MX][NW] on the stack otherwise, which halves the speed.

int64_t RoundUp(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// bf16 weights by vdpbf16ps (kAvx512Bf16Dot); x is bf16 ([m, ldx], ldx a multiple of 32,
// zero past k). W's last partial 32-element chunk is loaded under a mask (zeros), so the
// padding adds nothing.
template <int NW, int MX>
KVSPAN_AVX512 void Bf16DotTile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const uint16_t* w = static_cast<const uint16_t*>(b.p->w.data) + int64_t{j0} * k;
  const uint16_t* x = static_cast<const uint16_t*>(b.x) + i0 * b.ldx;
  __m512 acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int c = 0; c < k; c += 32) {
    const __mmask32 mask = k - c >= 32 ? ~__mmask32{0} : (__mmask32{1} << (k - c)) - 1;
    __m512i wv[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      wv[r] = _mm512_maskz_loadu_epi16(mask, w + int64_t{r} * k + c);
      PrefetchNextTile(w + int64_t{r} * k + c, 2 * int64_t{k});
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m512i xv = _mm512_loadu_si512(x + i * b.ldx + c);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], (__m512bh)xv, (__m512bh)wv[r]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) dots[i * kMaxTileRowsW + r] = _mm512_reduce_add_ps(acc[i][r]);
}

// bf16 weights, exact: 32 bf16 weights are one 512-bit load; a 16-bit left shift of each
// 32-bit lane gives the fp32 values of the even elements, a mask of the high halves those
// of the odd ones (2 integer operations per 32 weights). x is packed to match: per chunk of
// 32, its 16 even elements then its 16 odd ones, fp32 ([m, ldx], ldx a multiple of 32,
// zero past k).
template <int NW, int MX>
KVSPAN_AVX512 void Bf16Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const uint16_t* w = static_cast<const uint16_t*>(b.p->w.data) + int64_t{j0} * k;
  const float* x = static_cast<const float*>(b.x) + i0 * b.ldx;
  const __m512i high_halves = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
  __m512 acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int c = 0; c < k; c += 32) {
    const __mmask32 mask = k - c >= 32 ? ~__mmask32{0} : (__mmask32{1} << (k - c)) - 1;
    __m512 even[NW], odd[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      const __m512i bits = _mm512_maskz_loadu_epi16(mask, w + int64_t{r} * k + c);
      PrefetchNextTile(w + int64_t{r} * k + c, 2 * int64_t{k});
      even[r] = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
      odd[r] = _mm512_castsi512_ps(_mm512_and_si512(bits, high_halves));
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m512 xe = _mm512_loadu_ps(x + i * b.ldx + c);
      const __m512 xo = _mm512_loadu_ps(x + i * b.ldx + c + 16);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) {
        acc[i][r] = _mm512_fmadd_ps(xe, even[r], acc[i][r]);
        acc[i][r] = _mm512_fmadd_ps(xo, odd[r], acc[i][r]);
      }
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) dots[i * kMaxTileRowsW + r] = _mm512_reduce_add_ps(acc[i][r]);
}

// fp16 weights; x is p.x itself (fp32, ldx = k): exact products, fp32 accumulation.
template <int NW, int MX>
KVSPAN_AVX512 void F16Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const uint16_t* w = static_cast<const uint16_t*>(b.p->w.data) + int64_t{j0} * k;
  const float* x = b.p->x + int64_t{i0} * k;
  __m512 acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int c = 0; c < k; c += 16) {
    const __mmask16 mask = k - c >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (k - c)) - 1);
    __m512 wv[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      wv[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, w + int64_t{r} * k + c));
      PrefetchNextTile(w + int64_t{r} * k + c, 2 * int64_t{k});
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + int64_t{i} * k + c);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) dots[i * kMaxTileRowsW + r] = _mm512_reduce_add_ps(acc[i][r]);
}

// int8 weights; x is q + 128 as uint8 ([m, ldx], ldx a multiple of 64, zero past k).
// vpdpbusd multiplies unsigned by signed bytes: Σ (q + 128) · w = Σ q · w + 128 · row_sum.
// No overflow: |Σ| <= 255 · 127 · k < 2^31 for k < 66,000.
template <int NW, int MX>
KVSPAN_AVX512 void Int8Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const int8_t* w = static_cast<const int8_t*>(b.p->w.data) + int64_t{j0} * k;
  const uint8_t* x = static_cast<const uint8_t*>(b.x) + i0 * b.ldx;
  __m512i acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_setzero_si512();
  for (int c = 0; c < k; c += 64) {
    const __mmask64 mask = k - c >= 64 ? ~__mmask64{0} : (__mmask64{1} << (k - c)) - 1;
    __m512i wv[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      wv[r] = _mm512_maskz_loadu_epi8(mask, w + int64_t{r} * k + c);
      PrefetchNextTile(w + int64_t{r} * k + c, k);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m512i xv = _mm512_loadu_si512(x + i * b.ldx + c);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], xv, wv[r]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) {
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      const int32_t sum = _mm512_reduce_add_epi32(acc[i][r]) - 128 * b.p->w.row_sums[j0 + r];
      dots[i * kMaxTileRowsW + r] = static_cast<float>(sum);
    }
  }
}

template <int NW, int MX>
struct Bf16T {
  KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { Bf16Tile<NW, MX>(b, j0, i0, d); }
};
template <int NW, int MX>
struct Bf16DotT {
  KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { Bf16DotTile<NW, MX>(b, j0, i0, d); }
};
template <int NW, int MX>
struct F16T {
  KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { F16Tile<NW, MX>(b, j0, i0, d); }
};
template <int NW, int MX>
struct Int8T {
  KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { Int8Tile<NW, MX>(b, j0, i0, d); }
};

// 32 zmm registers: 4 W rows × 4 x rows of accumulators (16) + 4 W + x; the exact bf16
// tile holds 8 W vectors (even and odd), 2 of x and its mask constant: 27.
constexpr int kMaxMX = 4;
constexpr TileTable<Bf16T, kMaxMX> kBf16Tiles;
constexpr TileTable<Bf16DotT, kMaxMX> kBf16DotTiles;
constexpr TileTable<F16T, kMaxMX> kF16Tiles;
constexpr TileTable<Int8T, kMaxMX> kInt8Tiles;

}  // namespace

void TiledLinearAvx512(const LinearParams& p, bool bf16_dot) {
  const int k = p.w.cols;
  TiledOperands b;
  b.p = &p;
  b.x_row_bytes = int64_t{k} * sizeof(float);
  switch (p.w.format) {
    case WeightFormat::kBF16:
      if (bf16_dot) {
        thread_local std::vector<uint16_t> xb;
        b.ldx = RoundUp(k, 32);
        xb.assign(p.m * b.ldx, 0);
        for (int i = 0; i < p.m; ++i) {
          for (int c = 0; c < k; ++c) xb[i * b.ldx + c] = FloatToBf16(p.x[int64_t{i} * k + c]);
        }
        b.x = xb.data();
        b.x_row_bytes = b.ldx * sizeof(uint16_t);
        RunTiles(b, kBf16DotTiles.fns, kMaxMX);
      } else {
        // Each chunk of 32 elements of x as its 16 even elements, then its 16 odd ones.
        thread_local std::vector<float> xf;
        b.ldx = RoundUp(k, 32);
        xf.assign(p.m * b.ldx, 0.0f);
        for (int i = 0; i < p.m; ++i) {
          float* dst = xf.data() + i * b.ldx;
          for (int c = 0; c < k; ++c) dst[(c & ~31) + (c & 1) * 16 + (c & 31) / 2] = p.x[int64_t{i} * k + c];
        }
        b.x = xf.data();
        RunTiles(b, kBf16Tiles.fns, kMaxMX);
      }
      return;
    case WeightFormat::kF16:
      RunTiles(b, kF16Tiles.fns, kMaxMX);
      return;
    case WeightFormat::kInt8: {
      // q + 128 as uint8 (q XOR 0x80), zero past k: the padding adds nothing.
      RunTiles(PackInt8Activations(p, RoundUp(k, 64), /*flip=*/0x80), kInt8Tiles.fns, kMaxMX);
      return;
    }
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
