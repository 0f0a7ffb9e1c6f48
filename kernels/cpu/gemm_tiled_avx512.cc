// The AVX-512 tiled kernels of kernels::Linear: bf16 weights converted to fp32
// exactly (or, for CpuIsa::kAvx512Bf16Dot, by vdpbf16ps with x rounded to bf16), fp16
// weights by vcvtph2ps, both with FMA; int8 and int4 weights by VNNI vpdpbusd. Only
// the functions marked KVSPAN_AVX512 contain AVX-512 code (function-level target
// attributes, not a file-wide -mavx512*): inline helpers and templates the rest of the
// file instantiates stay AVX2, so the binary still runs on an AVX2-only CPU, where
// SelectedCpuIsa() never picks this file's kernels.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/cpu_features.h"
#include "common/float16.h"
#include "kernels/cpu/gemm_tiled.h"

// GCC 12's _mm512_undefined_* (behind _mm512_reduce_add_*) read a variable on purpose
// uninitialized (avx512fintrin.h: `__m512 __Y = __Y;`) and warn at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace kvspan::kernels::internal {
namespace {

// NOTE: every loop over a tile's W rows (NW) or x rows (MX) is unrolled by pragma: at -O2
// GCC keeps acc[MX][NW] on the stack otherwise, which halves the speed.

int64_t RoundUp(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// A tile's instruction family. Element: W's element type. kStep: elements of a row per
// loaded chunk. LoadW(w, remaining) loads one chunk of a W row, zero past `remaining`
// elements; LoadX(b, i, c, remaining) the matching chunk of packed x row i; Madd(acc, x, w)
// accumulates their products; Finish(acc, b, j) reduces acc to the dot product of W row j.

// bf16 exact: 32 bf16 weights are one 512-bit load; a 16-bit left shift of each 32-bit lane
// gives the fp32 values of the even elements, a mask of the high halves those of the odd
// ones (2 integer operations per 32 weights). x is packed to match: per chunk of 32, its 16
// even elements then its 16 odd ones, fp32 ([m, ldx], ldx a multiple of 32, zero past k).
struct Bf16Op {
  using Element = uint16_t;
  using Acc = __m512;
  struct W {
    __m512 even, odd;
  };
  using X = W;
  static constexpr int kStep = 32;
  KVSPAN_AVX512_INLINE Acc Zero() { return _mm512_setzero_ps(); }
  KVSPAN_AVX512_INLINE Acc Add(Acc a, Acc b) { return _mm512_add_ps(a, b); }
  static int64_t Offset(int c) { return c; }
  KVSPAN_AVX512_INLINE W LoadW(const uint16_t* w, int remaining, const TiledOperands&, int, int) {
    const __mmask32 mask = remaining >= 32 ? ~__mmask32{0} : (__mmask32{1} << remaining) - 1;
    const __m512i bits = _mm512_maskz_loadu_epi16(mask, w);
    return {_mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)),
            _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))))};
  }
  KVSPAN_AVX512_INLINE X LoadX(const TiledOperands& b, int i, int c, int) {
    const float* x = static_cast<const float*>(b.x) + i * b.ldx + c;
    return {_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)};
  }
  KVSPAN_AVX512_INLINE Acc Madd(Acc acc, const X& x, const W& w) {
    return _mm512_fmadd_ps(x.odd, w.odd, _mm512_fmadd_ps(x.even, w.even, acc));
  }
  KVSPAN_AVX512_INLINE float Finish(Acc acc, const TiledOperands&, int) { return _mm512_reduce_add_ps(acc); }
};

// bf16 by vdpbf16ps (kAvx512Bf16Dot): x is bf16 ([m, ldx], ldx a multiple of 32, zero past k).
struct Bf16DotOp {
  using Element = uint16_t;
  using Acc = __m512;
  using W = __m512i;
  using X = __m512i;
  static constexpr int kStep = 32;
  KVSPAN_AVX512_INLINE Acc Zero() { return _mm512_setzero_ps(); }
  KVSPAN_AVX512_INLINE Acc Add(Acc a, Acc b) { return _mm512_add_ps(a, b); }
  static int64_t Offset(int c) { return c; }
  KVSPAN_AVX512_INLINE W LoadW(const uint16_t* w, int remaining, const TiledOperands&, int, int) {
    const __mmask32 mask = remaining >= 32 ? ~__mmask32{0} : (__mmask32{1} << remaining) - 1;
    return _mm512_maskz_loadu_epi16(mask, w);
  }
  KVSPAN_AVX512_INLINE X LoadX(const TiledOperands& b, int i, int c, int) {
    return _mm512_loadu_si512(static_cast<const uint16_t*>(b.x) + i * b.ldx + c);
  }
  KVSPAN_AVX512_INLINE Acc Madd(Acc acc, X x, W w) { return _mm512_dpbf16_ps(acc, (__m512bh)x, (__m512bh)w); }
  KVSPAN_AVX512_INLINE float Finish(Acc acc, const TiledOperands&, int) { return _mm512_reduce_add_ps(acc); }
};

// fp16 by vcvtph2ps; x is p.x itself (fp32, [m, k]): exact products, fp32 accumulation.
struct F16Op {
  using Element = uint16_t;
  using Acc = __m512;
  using W = __m512;
  using X = __m512;
  static constexpr int kStep = 16;
  static __mmask16 Mask(int remaining) {
    return remaining >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << remaining) - 1);
  }
  KVSPAN_AVX512_INLINE Acc Zero() { return _mm512_setzero_ps(); }
  static int64_t Offset(int c) { return c; }
  KVSPAN_AVX512_INLINE W LoadW(const uint16_t* w, int remaining, const TiledOperands&, int, int) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(Mask(remaining), w));
  }
  KVSPAN_AVX512_INLINE X LoadX(const TiledOperands& b, int i, int c, int remaining) {
    return _mm512_maskz_loadu_ps(Mask(remaining), b.p->x + int64_t{i} * b.p->w.cols + c);
  }
  KVSPAN_AVX512_INLINE Acc Madd(Acc acc, X x, W w) { return _mm512_fmadd_ps(x, w, acc); }
  KVSPAN_AVX512_INLINE float Finish(Acc acc, const TiledOperands&, int) { return _mm512_reduce_add_ps(acc); }
};

// int8 by vpdpbusd; x is q + 128 as uint8 ([m, ldx], ldx a multiple of 64, zero past k).
// vpdpbusd multiplies unsigned by signed bytes: Σ (q + 128) · w = Σ q · w + 128 · row_sum.
// No overflow: |Σ| <= 255 · 127 · k < 2^31 for k < 66,000.
struct Int8Op {
  using Element = int8_t;
  using Acc = __m512i;
  using W = __m512i;
  using X = __m512i;
  static constexpr int kStep = 64;
  KVSPAN_AVX512_INLINE Acc Zero() { return _mm512_setzero_si512(); }
  KVSPAN_AVX512_INLINE Acc Add(Acc a, Acc b) { return _mm512_add_epi32(a, b); }
  static int64_t Offset(int c) { return c; }
  KVSPAN_AVX512_INLINE W LoadW(const int8_t* w, int remaining, const TiledOperands&, int, int) {
    const __mmask64 mask = remaining >= 64 ? ~__mmask64{0} : (__mmask64{1} << remaining) - 1;
    return _mm512_maskz_loadu_epi8(mask, w);
  }
  KVSPAN_AVX512_INLINE X LoadX(const TiledOperands& b, int i, int c, int) {
    return _mm512_loadu_si512(static_cast<const uint8_t*>(b.x) + i * b.ldx + c);
  }
  KVSPAN_AVX512_INLINE Acc Madd(Acc acc, X x, W w) { return _mm512_dpbusd_epi32(acc, x, w); }
  KVSPAN_AVX512_INLINE float Finish(Acc acc, const TiledOperands& b, int j) {
    return static_cast<float>(_mm512_reduce_add_epi32(acc) - 128 * b.p->w.row_sums[j]);
  }
};

// int8 by vpdpbusd on 256-bit vectors: the m = 1 rows tile's (the same exact sums as Int8Op).
// On Zen 4 it streams W faster than 512-bit loads do: `linear_bench --threads 2 --m 1
// --formats int8 --dram-mib 512 --seconds 0.2 --rounds 12`, median GB/s of 16384x2048 (2 KB
// rows) against Int8Op in the same runs: 41.7 / 46.6 against 32.5 / 40.2 (and 30.5 / 31.8
// against 28.3 / 29.3 for an equivalent loop in two earlier runs; docs/performance.md). The AVX2 rows
// tile, also 256-bit, read as fast as this one in those runs. Not re-measured on the Intel
// machine (a memory-bound stream there too: two 256-bit loads per cycle are far above DRAM).
struct Int8YmmOp {
  using Element = int8_t;
  using Acc = __m256i;
  using W = __m256i;
  using X = __m256i;
  static constexpr int kStep = 32;
  KVSPAN_AVX512_INLINE Acc Zero() { return _mm256_setzero_si256(); }
  KVSPAN_AVX512_INLINE Acc Add(Acc a, Acc b) { return _mm256_add_epi32(a, b); }
  static int64_t Offset(int c) { return c; }
  KVSPAN_AVX512_INLINE W LoadW(const int8_t* w, int remaining, const TiledOperands&, int, int) {
    const __mmask32 mask = remaining >= 32 ? ~__mmask32{0} : (__mmask32{1} << remaining) - 1;
    return _mm256_maskz_loadu_epi8(mask, w);
  }
  KVSPAN_AVX512_INLINE X LoadX(const TiledOperands& b, int i, int c, int) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint8_t*>(b.x) + i * b.ldx + c));
  }
  KVSPAN_AVX512_INLINE Acc Madd(Acc acc, X x, W w) { return _mm256_dpbusd_epi32(acc, x, w); }
  KVSPAN_AVX512_INLINE float Finish(Acc acc, const TiledOperands& b, int j) {
    return static_cast<float>(_mm512_reduce_add_epi32(_mm512_zextsi256_si512(acc)) - 128 * b.p->w.row_sums[j]);
  }
};

// The software prefetch of the one-stream decode tiles (the rows tile, the int4 panel tile):
// this many bytes ahead in the stream, a line per line loaded. linear_bench at m = 1 over 512
// MiB of copies (Intel Xeon with AMX, 2 threads, 2026-12-03): int8 16384x2048 22.5-23.7 -> 25.9-26.7 GB/s, 2048x8192 24.7-25.8 -> 26.2-27.0;
// bf16 23.3-26.8 -> 28.3 and 28.6-30.2 -> 29.6-29.9; 1536 and 3072 bytes were no better.
constexpr int kRowsPrefetchBytes = 2048;

KVSPAN_AVX512_INLINE void PrefetchAhead(const void* at, int bytes) {
  for (int o = 0; o < bytes; o += 64) __builtin_prefetch(static_cast<const char*>(at) + kRowsPrefetchBytes + o);
}

// Whether the rows tile prefetches: not on AMD, where (Zen 4) it runs faster with the
// hardware prefetchers alone: the 1B shape's decode (model_bench, three interleaved pairs,
// 2026-12-03) bf16 10.14 / 10.50 / 10.81 -> 11.24 / 11.76 / 11.76 tok/s, int8 16.84 / 17.51 /
// 16.34 -> 20.71 / 18.86 / 21.84; linear_bench int8 at m = 1 with no look-ahead 21.9-25.6 ->
// 25.1-34.0 GB/s. The int4 panel tile measured the same with or without (33.1 / 33.3 / 36.9
// against 33.9 / 35.2 / 31.4 tok/s) and keeps it. Decided on the first call.
bool RowsTilePrefetch() {
  static const bool prefetch = DetectCpuFeatures().vendor != "AuthenticAMD";
  return prefetch;
}

// int4 by vpdpbusd, one panel of 16 rows (weight_matrix.h) per tile, a lane per row: W is
// one sequential stream of 64-byte units, and a unit's low nibbles are the 16 rows' codes + 8
// of columns 8u .. 8u + 3, its high nibbles those of 8u + 4 .. 8u + 7, so each takes one
// vpdpbusd with x's 4 codes of those columns broadcast (PackInt4Activations' signed q). A
// group's sums stay integers, from -8 · Σ q of its columns (x_sums, per 32), so that each
// lane ends the group at Σ q · code exactly (|.| <= group_size · 7 · 127); then one
// conversion and one FMA by the group's 16 scales, loaded as one vector. No shuffles and no
// horizontal sums: per 256 bytes of W at group 32, 4 loads, 12 nibble ops, 8 vpdpbusd and 4
// per group, against 2x that for the 4-row panels with 8 lanes per row that this replaced
// (one thread, weights in L3: 24-30 -> 47-56 GB/s in a prototype, 2026-12-04 on Zen 4).
// dots[i * 16 + r] = Σ_g s_g Σ q · code for the panel's rows (padding rows included;
// RunPanelTiles drops them); StoreDots multiplies by s_x. Each x row's arithmetic is the same
// whatever MX, so a row gets the same bits at every m below kPanelGemmMinRows. At MX = 1
// even and odd units sum into their own registers (4 chains of vpdpbusd, each added to every
// other unit: one chain would wait on the instruction's latency). kPrefetch: the decode
// table's (m = 1), which reads one stream.
template <bool kPrefetch, int MX>
KVSPAN_AVX512 void Int4PanelTile(const TiledOperands& b, int j0, int i0, float* dots) {
  constexpr int kStreams = MX == 1 ? 2 : 1;
  const WeightMatrix& m = b.p->w;
  const int units = (m.cols + 63) / 64 * 8;
  const int num_groups = m.num_groups();
  const int units_per_group = m.group_size / 8;  // a multiple of 4
  const int halves_per_group = m.group_size / 32;
  const uint8_t* w = static_cast<const uint8_t*>(m.data) + Int4CodeOffset(m.cols, j0, 0);
  const uint16_t* scales = m.group_scales + Int4ScaleIndex(num_groups, j0, 0);
  const int8_t* x = static_cast<const int8_t*>(b.x) + int64_t{i0} * b.ldx;
  const int64_t ld_sums = b.ldx / 32;
  const int32_t* sums = b.x_sums + int64_t{i0} * ld_sums;
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  __m512 acc[MX];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) acc[i] = _mm512_setzero_ps();
  // Groups past the padded columns hold only padding (x and codes - 8 are 0): not run.
  for (int g = 0; g < num_groups; ++g) {
    const int u_begin = g * units_per_group, u_end = std::min(units, u_begin + units_per_group);
    __m512i lo[MX][kStreams], hi[MX][kStreams];
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      int32_t correction = 0;
      for (int h = g * halves_per_group; h < std::min<int64_t>(ld_sums, (g + 1) * halves_per_group); ++h) {
        correction += sums[i * ld_sums + h];
      }
      lo[i][0] = _mm512_set1_epi32(correction);
      hi[i][0] = _mm512_setzero_si512();
      if constexpr (kStreams == 2) lo[i][1] = hi[i][1] = _mm512_setzero_si512();
    }
    for (int u = u_begin; u < u_end; u += 2) {
      if constexpr (kPrefetch) PrefetchAhead(w + int64_t{u} * 64, 128);
      #pragma GCC unroll 2
      for (int s = 0; s < 2; ++s) {
        const __m512i v = _mm512_loadu_si512(w + int64_t{u + s} * 64);
        const __m512i low = _mm512_and_si512(v, nibble);
        const __m512i high = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
        #pragma GCC unroll 4
        for (int i = 0; i < MX; ++i) {
          int32_t x_low, x_high;
          std::memcpy(&x_low, x + i * b.ldx + (u + s) * 8, sizeof(x_low));
          std::memcpy(&x_high, x + i * b.ldx + (u + s) * 8 + 4, sizeof(x_high));
          lo[i][s % kStreams] = _mm512_dpbusd_epi32(lo[i][s % kStreams], low, _mm512_set1_epi32(x_low));
          hi[i][s % kStreams] = _mm512_dpbusd_epi32(hi[i][s % kStreams], high, _mm512_set1_epi32(x_high));
        }
      }
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + g * kInt4PanelRows)));
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      __m512i sum = _mm512_add_epi32(lo[i][0], hi[i][0]);
      if constexpr (kStreams == 2) sum = _mm512_add_epi32(sum, _mm512_add_epi32(lo[i][1], hi[i][1]));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[i]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) _mm512_storeu_ps(dots + i * kInt4PanelRows, acc[i]);
}

// The int4 tables: one tile per MX (fns[0]), each a whole panel.
template <bool kPrefetch>
struct Int4PanelTiles {
  template <int NW, int MX>
  struct T {
    KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) {
      Int4PanelTile<kPrefetch, MX>(b, j0, i0, d);
    }
  };
};

// The tile of every family: rows [j0, j0 + NW) of W against packed x rows [i0, i0 + MX).
// W's last partial chunk is loaded under a mask (zeros), so x's zero padding adds nothing.
template <class Op, int NW, int MX>
KVSPAN_AVX512 void Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const int64_t row_bytes = WeightRowBytes(b.p->w.format, k);
  const int64_t stride = row_bytes / int64_t{sizeof(typename Op::Element)};  // elements per stored row
  const typename Op::Element* w = static_cast<const typename Op::Element*>(b.p->w.data) + int64_t{j0} * stride;
  typename Op::Acc acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = Op::Zero();
  for (int c = 0; c < k; c += Op::kStep) {
    typename Op::W wv[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      const typename Op::Element* at = w + int64_t{r} * stride + Op::Offset(c);
      wv[r] = Op::LoadW(at, k - c, b, j0 + r, c);
      PrefetchNextTile(at, row_bytes);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const typename Op::X xv = Op::LoadX(b, i0 + i, c, k - c);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) acc[i][r] = Op::Madd(acc[i][r], xv, wv[r]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) dots[i * kMaxTileRowsW + r] = Op::Finish(acc[i][r], b, j0 + r);
}

// Decode (one x row): the tile's rows one after another, so that W is read as one sequential
// stream (rows are contiguous) rather than NW interleaved ones, which the hardware
// prefetchers follow worse. Each row reads all of packed x, so this needs x to stay in L1
// beside the stream (UseRowsTile). Two accumulators per row hide the multiply's latency; W's last
// partial chunk is loaded under a mask, as in Tile. The operands are copied into a local: with
// loads through the reference GCC 12 re-read b.x and b.ldx (and multiplied them) in every
// iteration; the prefetch choice is a template argument for the same reason.
template <class Op, int NW, bool kPrefetch>
KVSPAN_AVX512_INLINE void RowsTileLoop(const TiledOperands& operands, int j0, int i0, float* dots) {
  const TiledOperands b = operands;
  const int k = b.p->w.cols;
  const int64_t stride = WeightRowBytes(b.p->w.format, k) / int64_t{sizeof(typename Op::Element)};
  const typename Op::Element* w = static_cast<const typename Op::Element*>(b.p->w.data) + int64_t{j0} * stride;
  #pragma GCC unroll 1
  for (int r = 0; r < NW; ++r, w += stride) {
    typename Op::Acc acc0 = Op::Zero(), acc1 = Op::Zero();
    int c = 0;
    for (; c + 2 * Op::kStep <= k; c += 2 * Op::kStep) {  // whole chunks: constant (all-ones) masks
      if constexpr (kPrefetch) PrefetchAhead(w + c, 2 * Op::kStep * sizeof(typename Op::Element));
      acc0 = Op::Madd(acc0, Op::LoadX(b, i0, c, Op::kStep), Op::LoadW(w + c, Op::kStep, b, j0 + r, c));
      const int c1 = c + Op::kStep;
      acc1 = Op::Madd(acc1, Op::LoadX(b, i0, c1, Op::kStep), Op::LoadW(w + c1, Op::kStep, b, j0 + r, c1));
    }
    for (; c < k; c += Op::kStep) acc0 = Op::Madd(acc0, Op::LoadX(b, i0, c, k - c), Op::LoadW(w + c, k - c, b, j0 + r, c));
    dots[r] = Op::Finish(Op::Add(acc0, acc1), b, j0 + r);
  }
}

template <class Op, int NW>
KVSPAN_AVX512 void RowsTile(const TiledOperands& b, int j0, int i0, float* dots) {
  if (RowsTilePrefetch()) {
    RowsTileLoop<Op, NW, true>(b, j0, i0, dots);
  } else {
    RowsTileLoop<Op, NW, false>(b, j0, i0, dots);
  }
}


template <class Op>
struct RowsOf {
  template <int NW, int MX>
  struct T {
    static_assert(MX == 1);
    KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { RowsTile<Op, NW>(b, j0, i0, d); }
  };
};

template <class Op>
struct TilesOf {
  template <int NW, int MX>
  struct T {
    KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { Tile<Op, NW, MX>(b, j0, i0, d); }
  };
};

KVSPAN_AVX512 void RoundRowsToBf16Avx512(const LinearParams& p, int64_t ldx, uint16_t* dst) {
  const int k = p.w.cols;
  for (int i = 0; i < p.m; ++i) {
    const float* src = p.x + int64_t{i} * k;
    uint16_t* out = dst + i * ldx;
    for (int64_t c = 0; c < ldx; c += 16) {
      const int64_t left = std::min<int64_t>(16, std::max<int64_t>(0, k - c));
      const __mmask16 mask = static_cast<__mmask16>((uint32_t{1} << left) - 1);
      const __m256i b = FloatToBf16x16(_mm512_maskz_loadu_ps(mask, src + c));
      _mm256_mask_storeu_epi16(out + c, static_cast<__mmask16>((uint32_t{1} << std::min<int64_t>(16, ldx - c)) - 1), b);
    }
  }
}

// 32 zmm registers: 4 W rows × 4 x rows of accumulators (16) + 4 W + x; the exact bf16
// tile holds 8 W vectors (even and odd), 2 of x and its mask constant: 27.
constexpr int kMaxMX = 4;
constexpr TileTable<TilesOf<Bf16Op>::T, kMaxMX> kBf16Tiles;
constexpr TileTable<TilesOf<Bf16DotOp>::T, kMaxMX> kBf16DotTiles;
constexpr TileTable<TilesOf<F16Op>::T, kMaxMX> kF16Tiles;
constexpr TileTable<TilesOf<Int8Op>::T, kMaxMX> kInt8Tiles;
constexpr TileTable<RowsOf<Int8YmmOp>::T, 1> kInt8DecodeTiles;
constexpr TileTable<RowsOf<Bf16Op>::T, 1> kBf16DecodeTiles;
constexpr TileTable<RowsOf<Bf16DotOp>::T, 1> kBf16DotDecodeTiles;
constexpr TileTable<Int4PanelTiles<true>::T, 1, TileFn, 1> kInt4DecodeTiles;
constexpr TileTable<Int4PanelTiles<false>::T, kMaxMX, TileFn, 1> kInt4Tiles;

}  // namespace

void RoundRowsToBf16(const LinearParams& p, int64_t ldx, uint16_t* dst) { RoundRowsToBf16Avx512(p, ldx, dst); }

void TiledLinearAvx512(const LinearParams& p, CpuIsa isa) {
  const bool bf16_dot = isa == CpuIsa::kAvx512Bf16Dot;
  const bool amx = isa == CpuIsa::kAmx && p.m >= kAmxGemmMinRows;
  const int k = p.w.cols;
  TiledOperands b;
  b.p = &p;
  b.x_row_bytes = int64_t{k} * sizeof(float);
  switch (p.w.format) {
    case WeightFormat::kBF16:
      if (amx) {
        AmxGemmBf16(p);
      } else if (p.m >= kPanelGemmMinRows) {
        PanelGemmBf16(p, bf16_dot);
      } else if (bf16_dot) {
        thread_local std::vector<uint16_t> xb;
        b.ldx = RoundUp(k, 32);
        xb.resize(p.m * b.ldx);
        RoundRowsToBf16Avx512(p, b.ldx, xb.data());
        b.x = xb.data();
        b.x_row_bytes = b.ldx * sizeof(uint16_t);
        RunTiles(b, UseRowsTile(p, b.x_row_bytes) ? kBf16DotDecodeTiles.fns : kBf16DotTiles.fns, kMaxMX);
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
        RunTiles(b, UseRowsTile(p, b.ldx * sizeof(float)) ? kBf16DecodeTiles.fns : kBf16Tiles.fns, kMaxMX);
      }
      return;
    case WeightFormat::kF16:
      RunTiles(b, kF16Tiles.fns, kMaxMX);
      return;
    case WeightFormat::kInt8: {
      if (amx) {
        AmxGemmInt8(p);
        return;
      }
      if (p.m >= kPanelGemmMinRows) {
        PanelGemmInt8(p);
        return;
      }
      // q + 128 as uint8 (q XOR 0x80), zero past k: the padding adds nothing.
      RunTiles(PackInt8Activations(p, RoundUp(k, 64), /*flip=*/0x80),
               UseRowsTile(p, RoundUp(k, 64)) ? kInt8DecodeTiles.fns : kInt8Tiles.fns, kMaxMX);
      return;
    }
    case WeightFormat::kInt4:
      if (p.m >= kPanelGemmMinRows) {
        PanelGemmInt4(p);
      } else {
        RunPanelTiles(PackInt4Activations(p), kInt4PanelRows, p.m == 1 ? kInt4DecodeTiles.fns[0] : kInt4Tiles.fns[0], kMaxMX);
      }
      return;
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
