// The AVX2 + FMA + F16C tiled kernels of kernels::Linear (the build's floor, so this
// file needs no target attributes): bf16 and fp16 weights converted to fp32 in registers
// (exact) and multiplied with fp32 x by FMA; int8 by vpmaddubsw on |q| and sign-adjusted
// codes (both <= 127 in magnitude, so the 16-bit pair sums cannot saturate); int4 by
// vpmaddubsw on unpacked unsigned codes and q.
#include <immintrin.h>

#include <vector>

#include "common/float16.h"
#include "kernels/cpu/gemm_tiled.h"
#include "kernels/cpu/vec.h"

namespace kvspan::kernels::internal {
namespace {

// NOTE: every loop over a tile's W rows (NW) or x rows (MX) is unrolled by pragma: at -O2
// GCC keeps acc[MX][NW] on the stack otherwise, which halves the speed.

template <WeightFormat F>
inline __m256 Load8(const uint16_t* w) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  if constexpr (F == WeightFormat::kBF16) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  } else {
    return _mm256_cvtph_ps(bits);
  }
}

template <WeightFormat F>
inline float Scalar(uint16_t w) {
  if constexpr (F == WeightFormat::kBF16) {
    return Bf16ToFloat(w);
  } else {
    return HalfToFloat(w);
  }
}

// bf16 / fp16 weights; x is p.x itself (ldx = k). One order of sums for every m (per output,
// 8 lanes of FMAs in column order, HorizontalSum, then the tail in order), so a row of x gets
// the same bits whatever the batch around it (ServeTest.OutputDoesNotDependOnTheBatch).
template <WeightFormat F, int NW, int MX>
void FloatTile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const uint16_t* w = static_cast<const uint16_t*>(b.p->w.data) + int64_t{j0} * k;
  const float* x = b.p->x + int64_t{i0} * k;
  __m256 acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_setzero_ps();
  int c = 0;
  for (; c + 8 <= k; c += 8) {
    __m256 wv[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      wv[r] = Load8<F>(w + int64_t{r} * k + c);
      if ((c & 31) == 0) PrefetchNextTile(w + int64_t{r} * k + c, 2 * int64_t{k});  // once per 64-byte line
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + int64_t{i} * k + c);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) {
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      float sum = HorizontalSum(acc[i][r]);
      for (int l = c; l < k; ++l) sum += x[int64_t{i} * k + l] * Scalar<F>(w[int64_t{r} * k + l]);
      dots[i * kMaxTileRowsW + r] = sum;
    }
  }
}

inline int32_t HorizontalSumEpi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// acc plus the 8 lane sums of q · w over 32 int8 pairs: |q| · (w · sign(q)) = q · w, pairwise
// in 16 bits (|.| <= 2 · 127 · 127 < 2^15), then widened by vpmaddwd. q_abs = |q|.
inline __m256i AddInt8Dot(__m256i acc, __m256i q_abs, __m256i qv, __m256i wv, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q_abs, _mm256_sign_epi8(wv, qv)), ones));
}

// int8 weights; x is the int8 codes q ([m, k]).
template <int NW, int MX>
void Int8Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const int8_t* w = static_cast<const int8_t*>(b.p->w.data) + int64_t{j0} * k;
  const int8_t* q = static_cast<const int8_t*>(b.x) + int64_t{i0} * b.ldx;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_setzero_si256();
  int c = 0;
  for (; c + 32 <= k; c += 32) {
    __m256i wv[NW];
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + int64_t{r} * k + c));
      if ((c & 63) == 0) PrefetchNextTile(w + int64_t{r} * k + c, k);  // once per 64-byte line
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * b.ldx + c));
      const __m256i q_abs = _mm256_sign_epi8(qv, qv);
      #pragma GCC unroll 4
      for (int r = 0; r < NW; ++r) acc[i][r] = AddInt8Dot(acc[i][r], q_abs, qv, wv[r], ones);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) {
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      int32_t sum = HorizontalSumEpi32(acc[i][r]);
      for (int l = c; l < k; ++l) sum += int32_t{q[i * b.ldx + l]} * w[int64_t{r} * k + l];
      dots[i * kMaxTileRowsW + r] = static_cast<float>(sum);
    }
  }
}

// Decode (one x row) of int8 weights: the tile's rows one after another, so that W is read as
// one sequential stream (rows are contiguous) rather than NW interleaved ones; each row reads
// all of x's codes, which UseRowsTile keeps to calls whose codes stay in L1 beside the stream.
// The integer sums are exact, so every m gives the same values. (bf16 / fp16 keep the 4-row
// tile at m = 1: a rows tile needs more than one accumulator per row to hide the FMA's
// latency, and that order of fp32 sums would make a row's result depend on the batch.)
template <int NW>
void Int8RowsTile(const TiledOperands& b, int j0, int i0, float* dots) {
  const int k = b.p->w.cols;
  const int8_t* w = static_cast<const int8_t*>(b.p->w.data) + int64_t{j0} * k;
  const int8_t* q = static_cast<const int8_t*>(b.x) + int64_t{i0} * b.ldx;
  const __m256i ones = _mm256_set1_epi16(1);
  #pragma GCC unroll 1
  for (int r = 0; r < NW; ++r, w += k) {
    __m256i acc = _mm256_setzero_si256();  // one chain suffices: its only dependency is vpaddd
    int c = 0;
    for (; c + 32 <= k; c += 32) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c));
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c));
      acc = AddInt8Dot(acc, _mm256_sign_epi8(qv, qv), qv, wv, ones);
    }
    int32_t sum = HorizontalSumEpi32(acc);
    for (; c < k; ++c) sum += int32_t{q[c]} * w[c];
    dots[r] = static_cast<float>(sum);
  }
}

// int4 weights (j0 is a multiple of 4, so the tile's rows are one panel of weight_matrix.h:
// row r's 32 bytes of block t at panel + 128 t + 32 r, its scale of group g at panel_scales
// + 4 g + r); x is the int8 codes q ([m, ldx], ldx a multiple of 64, zero past k) and
// x_offsets the 8 · Σ q of each 4 elements (PackInt4Activations). Per 32 elements (one
// group's worth: group_size is a multiple of 32) the codes + 8 in [1, 15] are one nibble
// mask of a row's packed 32 bytes (low nibbles for the first 32 elements of the block, high
// for the next 32); vpmaddubsw (unsigned codes × signed q, pairs <= 2 · 15 · 127: no
// saturation) and vpmaddwd give 8 lane sums, minus the lanes' 8 · Σ q that is Σ q · code
// exactly; converted and accumulated by FMA times the group's scale. dots = Σ_g s_g Σ q ·
// code. A row's codes and scale are made once per 32 elements for all MX rows of x.
template <int NW, int MX>
void Int4Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  const WeightMatrix& m = b.p->w;
  const int k = m.cols;
  const int num_groups = m.num_groups();
  const uint8_t* panel = static_cast<const uint8_t*>(m.data) + Int4CodeOffset(k, j0, 0);
  const uint16_t* panel_scales = m.group_scales + Int4ScaleIndex(num_groups, j0, 0);
  const int8_t* q = static_cast<const int8_t*>(b.x) + int64_t{i0} * b.ldx;
  const int32_t* offsets = b.x_offsets + int64_t{i0} * (b.ldx / 4);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  __m256 acc[MX][NW];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_setzero_ps();
  // The group of the 32 elements at c, counted rather than divided (group_size is a multiple of 32).
  const int chunks_per_group = m.group_size / 32;
  int group = 0, chunks_left = chunks_per_group;
  for (int c = 0; c < k; c += 32) {
    const int shift = (c & 32) != 0 ? 4 : 0;
    const uint8_t* block = panel + (c / 64) * 32 * kInt4PanelRows;
    const uint16_t* group_scales = panel_scales + group * kInt4PanelRows;
    if (--chunks_left == 0) {
      ++group;
      chunks_left = chunks_per_group;
    }
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * r));
      const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(packed, shift), nibble);
      const __m256 scale = _mm256_set1_ps(_cvtsh_ss(group_scales[r]));
      #pragma GCC unroll 4
      for (int i = 0; i < MX; ++i) {
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * b.ldx + c));
        const __m256i plus_8_sum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offsets + i * (b.ldx / 4) + c / 4));
        const __m256i sums = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(codes, qv), ones), plus_8_sum);
        acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[i][r]);
      }
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) dots[i * kMaxTileRowsW + r] = HorizontalSum(acc[i][r]);
}

// The int4 operands: PackInt8Activations' codes (ldx a multiple of 64) and, in x_offsets
// ([m, ldx / 4] int32, thread_local as the codes), 8 · Σ q over each 4 consecutive codes:
// the lanes Int4Tile subtracts.
TiledOperands PackInt4Activations(const LinearParams& p) {
  const int64_t ldx = (int64_t{p.w.cols} + 63) / 64 * 64;
  TiledOperands b = PackInt8Activations(p, ldx, /*flip=*/0);
  thread_local std::vector<int32_t> offsets;
  offsets.resize(p.m * (ldx / 4));
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i eights = _mm256_set1_epi8(8);
  for (int64_t i = 0; i < p.m; ++i) {
    const int8_t* q = static_cast<const int8_t*>(b.x) + i * ldx;
    int32_t* row = offsets.data() + i * (ldx / 4);
    for (int64_t c = 0; c < ldx; c += 32) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + c / 4), _mm256_madd_epi16(_mm256_maddubs_epi16(eights, qv), ones));
    }
  }
  b.x_offsets = offsets.data();
  b.x_row_bytes = ldx * 2;  // codes and offsets
  return b;
}

template <int NW, int MX>
struct Bf16T {
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { FloatTile<WeightFormat::kBF16, NW, MX>(b, j0, i0, d); }
};
template <int NW, int MX>
struct F16T {
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { FloatTile<WeightFormat::kF16, NW, MX>(b, j0, i0, d); }
};
template <int NW, int MX>
struct Int8T {
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { Int8Tile<NW, MX>(b, j0, i0, d); }
};
template <int NW, int MX>
struct Int4T {
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { Int4Tile<NW, MX>(b, j0, i0, d); }
};

template <int NW, int MX>
struct Int8RowsT {
  static_assert(MX == 1);
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { Int8RowsTile<NW>(b, j0, i0, d); }
};

// Rows of x per tile. 16 ymm registers: 4 W rows × 2 x rows of fp32 accumulators (8) + 4 W
// + x. The int8 tile at 2 x rows spills two of its 8 accumulators (|q|, ones and a temporary
// besides) and was still faster than 1 row at m = 512 in linear_bench; the int4 tile makes a
// row's codes and scale once for all its x rows, so 4 × 3 accumulators fit (model_bench 1B
// prefill: 3 rows 47.9 / 53.3 tok/s against 2 rows 41.6 / 38.5; 4 rows no faster than 3).
constexpr int kFloatMaxMX = 2;
constexpr int kInt8MaxMX = 2;
constexpr int kInt4MaxMX = 3;
constexpr TileTable<Bf16T, kFloatMaxMX> kBf16Tiles;
constexpr TileTable<F16T, kFloatMaxMX> kF16Tiles;
constexpr TileTable<Int8T, kInt8MaxMX> kInt8Tiles;
constexpr TileTable<Int4T, kInt4MaxMX> kInt4Tiles;
constexpr TileTable<Int8RowsT, 1> kInt8RowsTiles;

}  // namespace

void TiledLinearAvx2(const LinearParams& p) {
  TiledOperands b;
  b.p = &p;
  b.x_row_bytes = int64_t{p.w.cols} * sizeof(float);
  switch (p.w.format) {
    case WeightFormat::kBF16:
      RunTiles(b, kBf16Tiles.fns, kFloatMaxMX);
      return;
    case WeightFormat::kF16:
      RunTiles(b, kF16Tiles.fns, kFloatMaxMX);
      return;
    case WeightFormat::kInt8: {
      RunTiles(PackInt8Activations(p, p.w.cols, /*flip=*/0), UseRowsTile(p, p.w.cols) ? kInt8RowsTiles.fns : kInt8Tiles.fns,
               kInt8MaxMX);
      return;
    }
    case WeightFormat::kInt4: {
      RunTiles(PackInt4Activations(p), kInt4Tiles.fns, kInt4MaxMX);
      return;
    }
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
