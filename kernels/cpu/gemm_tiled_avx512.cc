// The AVX-512 tiled kernels of kernels::Linear: bf16 weights converted to fp32
// exactly (or, for CpuIsa::kAvx512Bf16Dot, by vdpbf16ps with x rounded to bf16), fp16
// weights by vcvtph2ps, both with FMA; int8 and int4 weights by VNNI vpdpbusd. Only
// the functions marked KVSPAN_AVX512 contain AVX-512 code (function-level target
// attributes, not a file-wide -mavx512*): inline helpers and templates the rest of the
// file instantiates stay AVX2, so the binary still runs on an AVX2-only CPU, where
// SelectedCpuIsa() never picks this file's kernels.
#include <immintrin.h>

#include <algorithm>
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

// int4 by vpdpbusd, one panel of 4 rows (weight_matrix.h) per tile: each 64-column block is
// 128 contiguous bytes (32 per row), so the tile reads one sequential stream. A 64-byte half
// of a block holds two rows' 32 packed bytes; its low nibbles are the two rows' codes + 8 of
// elements 0-31 of the block, its high nibbles those of elements 32-63. x is
// PackInt4Activations': q of elements 0-31 is broadcast to both 256-bit halves of a register,
// q of elements 32-63 likewise, and vpdpbusd starts from -8 · Σ q of those 32 (x_sums) in
// lanes 0 and 8, zero elsewhere: lanes 0-7 of a result are one row's 32 elements (one group:
// group_size is a multiple of 32), lanes 8-15 the other row's, so their sum is Σ q · code
// exactly (|lane| <= 4 · 127 · 15 + 8 · 32 · 127). Converted to fp32 and accumulated by FMA
// times the matching scales (a vpermps of the 4 rows' scales of the group). dots = Σ_g s_g
// Σ q · code for the panel's 4 rows (padding rows included; RunTiles drops them); RunTiles
// multiplies by s_x. Each x row's arithmetic is the same whatever MX, so a row gets the same
// bits at every m below kPanelGemmMinRows. kPrefetch: the decode table's (m = 1), which
// reads one stream.
template <bool kPrefetch, int MX>
KVSPAN_AVX512 void Int4PanelTile(const TiledOperands& b, int j0, int i0, float* dots) {
  const WeightMatrix& m = b.p->w;
  const int blocks = (m.cols + 63) / 64;
  const int num_groups = m.num_groups();
  const int halves_per_group = m.group_size / 32;
  const uint8_t* w = static_cast<const uint8_t*>(m.data) + Int4CodeOffset(m.cols, j0, 0);
  const uint16_t* scales = m.group_scales + Int4ScaleIndex(num_groups, j0, 0);
  const uint8_t* x = static_cast<const uint8_t*>(b.x) + int64_t{i0} * b.ldx;
  const int64_t ld_sums = b.ldx / 32;
  const int32_t* sums = b.x_sums + int64_t{i0} * ld_sums;
  constexpr __mmask16 kRowLanes = 0x0101;  // lane 0 of each row of a pair
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  const __m512i rows01 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i rows23 = _mm512_add_epi32(rows01, _mm512_set1_epi32(2));
  __m512 acc[MX][2];  // [x row][rows 0-1, rows 2-3]
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  // The group of each 32-element half of a block, counted up (clamped: halves past cols,
  // whose codes and x are 0, keep the last group).
  int group = 0, halves_left = halves_per_group;
  auto next_half = [&] {
    if (--halves_left == 0) {
      halves_left = halves_per_group;
      if (group < num_groups - 1) ++group;
    }
  };
  for (int t = 0; t < blocks; ++t) {
    if constexpr (kPrefetch) PrefetchAhead(w + int64_t{t} * 128, 128);
    const __m512i v01 = _mm512_loadu_si512(w + int64_t{t} * 128);
    const __m512i v23 = _mm512_loadu_si512(w + int64_t{t} * 128 + 64);
    const __m512i low01 = _mm512_and_si512(v01, nibble), low23 = _mm512_and_si512(v23, nibble);
    const __m512i high01 = _mm512_and_si512(_mm512_srli_epi16(v01, 4), nibble);
    const __m512i high23 = _mm512_and_si512(_mm512_srli_epi16(v23, 4), nibble);
    const __m512 s_low = _mm512_castps128_ps512(
        _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + group * kInt4PanelRows))));
    next_half();
    const __m512 s_high = _mm512_castps128_ps512(
        _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + group * kInt4PanelRows))));
    next_half();
    const __m512 s_low01 = _mm512_permutexvar_ps(rows01, s_low), s_low23 = _mm512_permutexvar_ps(rows23, s_low);
    const __m512 s_high01 = _mm512_permutexvar_ps(rows01, s_high), s_high23 = _mm512_permutexvar_ps(rows23, s_high);
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const uint8_t* xi = x + i * b.ldx + int64_t{t} * 64;
      const __m512i q_low = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi)));
      const __m512i q_high = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi + 32)));
      const __m512i c_low = _mm512_maskz_set1_epi32(kRowLanes, sums[i * ld_sums + 2 * t]);
      const __m512i c_high = _mm512_maskz_set1_epi32(kRowLanes, sums[i * ld_sums + 2 * t + 1]);
      acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c_low, low01, q_low)), s_low01, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c_low, low23, q_low)), s_low23, acc[i][1]);
      acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c_high, high01, q_high)), s_high01, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c_high, high23, q_high)), s_high23, acc[i][1]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) {
    // Lanes 0-7 / 8-15 of acc[i][0] are rows 0 / 1, of acc[i][1] rows 2 / 3.
    const __m256 h01 = _mm256_hadd_ps(_mm512_castps512_ps256(acc[i][0]), _mm512_extractf32x8_ps(acc[i][0], 1));
    const __m256 h23 = _mm256_hadd_ps(_mm512_castps512_ps256(acc[i][1]), _mm512_extractf32x8_ps(acc[i][1], 1));
    const __m256 h = _mm256_hadd_ps(h01, h23);  // per 128-bit half: rows 0, 1, 2, 3
    _mm_storeu_ps(dots + i * kMaxTileRowsW, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
}

// RunTiles' tables: every nw runs the whole panel (j0 is a multiple of 4 there).
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
constexpr TileTable<Int4PanelTiles<true>::T, 1> kInt4DecodeTiles;
constexpr TileTable<Int4PanelTiles<false>::T, kMaxMX> kInt4Tiles;

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
        RunTiles(PackInt4Activations(p), p.m == 1 ? kInt4DecodeTiles.fns : kInt4Tiles.fns, kMaxMX);
      }
      return;
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
