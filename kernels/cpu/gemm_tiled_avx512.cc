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

#define KVSPAN_AVX512_INLINE \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni"), always_inline)) static inline

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

// int4 by vpdpbusd: W's 64 codes of a chunk (32 packed bytes: low nibbles elements 0-31,
// high nibbles 32-63) unpacked to the unsigned code + 8 in [1, 15]; x is the signed int8 q
// ([m, ldx], ldx a multiple of 64, zero past k). Each chunk's 16 lane sums start from
// -8 · (the lane's Σ q), so vpdpbusd leaves Σ q · code exactly (|.| <= 4 · 127 · 8 per lane),
// then convert to fp32 and accumulate times the lane's group scale (lanes 0-7 hold elements
// 0-31 of the chunk, lanes 8-15 elements 32-63: one group each, group_size being a multiple
// of 32). The tile's dots are Σ_g s_g Σ q · code; RunTiles multiplies by s_x.
struct Int4Op {
  using Element = uint8_t;
  using Acc = __m512;
  struct W {
    __m512i codes;
    __m512 scale;
  };
  struct X {
    __m512i q;
    __m512i minus_8_sum;  // per lane: -8 · Σ of its 4 q's
  };
  static constexpr int kStep = 64;
  static int64_t Offset(int c) { return c / 2; }
  KVSPAN_AVX512_INLINE Acc Zero() { return _mm512_setzero_ps(); }
  KVSPAN_AVX512_INLINE W LoadW(const uint8_t* w, int, const TiledOperands& b, int row, int c) {
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));  // rows are padded
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i low = _mm256_and_si256(packed, nibble);
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
    const WeightMatrix& m = b.p->w;
    const uint16_t* scales = m.group_scales + int64_t{row} * m.num_groups();
    const int g_low = c / m.group_size;
    const int g_high = std::min(m.num_groups() - 1, (c + 32) / m.group_size);
    return {_mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1),
            _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(scales[g_low])), _mm256_set1_ps(_cvtsh_ss(scales[g_high])), 1)};
  }
  KVSPAN_AVX512_INLINE X LoadX(const TiledOperands& b, int i, int c, int) {
    const __m512i q = _mm512_loadu_si512(static_cast<const int8_t*>(b.x) + i * b.ldx + c);
    const __m512i sum8 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), q);
    return {q, _mm512_sub_epi32(_mm512_setzero_si512(), sum8)};
  }
  KVSPAN_AVX512_INLINE Acc Madd(Acc acc, const X& x, const W& w) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(x.minus_8_sum, w.codes, x.q)), w.scale, acc);
  }
  KVSPAN_AVX512_INLINE float Finish(Acc acc, const TiledOperands&, int) { return _mm512_reduce_add_ps(acc); }
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

template <class Op>
struct TilesOf {
  template <int NW, int MX>
  struct T {
    KVSPAN_AVX512 static void Run(const TiledOperands& b, int j0, int i0, float* d) { Tile<Op, NW, MX>(b, j0, i0, d); }
  };
};

// 32 zmm registers: 4 W rows × 4 x rows of accumulators (16) + 4 W + x; the exact bf16
// tile holds 8 W vectors (even and odd), 2 of x and its mask constant: 27.
constexpr int kMaxMX = 4;
constexpr TileTable<TilesOf<Bf16Op>::T, kMaxMX> kBf16Tiles;
constexpr TileTable<TilesOf<Bf16DotOp>::T, kMaxMX> kBf16DotTiles;
constexpr TileTable<TilesOf<F16Op>::T, kMaxMX> kF16Tiles;
constexpr TileTable<TilesOf<Int8Op>::T, kMaxMX> kInt8Tiles;
constexpr TileTable<TilesOf<Int4Op>::T, kMaxMX> kInt4Tiles;

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
    case WeightFormat::kInt4:
      RunTiles(PackInt8Activations(p, RoundUp(k, 64), /*flip=*/0), kInt4Tiles.fns, kMaxMX);
      return;
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
