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

// bf16 / fp16 weights; x is p.x itself (ldx = k).
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
      for (int r = 0; r < NW; ++r) {
        // |q| · (w · sign(q)) = q · w, pairwise in 16 bits (|.| <= 2 · 127 · 127 < 2^15).
        const __m256i pairs = _mm256_maddubs_epi16(q_abs, _mm256_sign_epi8(wv[r], qv));
        acc[i][r] = _mm256_add_epi32(acc[i][r], _mm256_madd_epi16(pairs, ones));
      }
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

// int4 weights (one x row per tile; j0 is a multiple of 4, so the tile's rows are one panel of
// weight_matrix.h: row r's 32 bytes of block t at panel + 128 t + 32 r, its scale of group g
// at panel_scales + 4 g + r); x is the int8 codes q ([m, ldx], ldx a multiple of 64, zero
// past k). Per 32 elements (one group's worth: group_size is a multiple of 32) the codes + 8
// in [1, 15] are one nibble mask of a row's packed 32 bytes (low nibbles for the first 32
// elements of the block, high for the next 32); vpmaddubsw (unsigned codes × signed q, pairs
// <= 2 · 15 · 127: no saturation) and vpmaddwd give 8 lane sums, minus 8 · Σ q of the lane's
// 4 elements that is Σ q · code exactly; converted and accumulated by FMA times the group's
// scale. dots = Σ_g s_g Σ q · code.
template <int NW, int MX>
void Int4Tile(const TiledOperands& b, int j0, int i0, float* dots) {
  static_assert(MX == 1);
  const WeightMatrix& m = b.p->w;
  const int k = m.cols;
  const int num_groups = m.num_groups();
  const uint8_t* panel = static_cast<const uint8_t*>(m.data) + Int4CodeOffset(k, j0, 0);
  const uint16_t* panel_scales = m.group_scales + Int4ScaleIndex(num_groups, j0, 0);
  const int8_t* q = static_cast<const int8_t*>(b.x) + int64_t{i0} * b.ldx;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i eights = _mm256_set1_epi8(8);
  __m256 acc[NW];
  #pragma GCC unroll 4
  for (int r = 0; r < NW; ++r) acc[r] = _mm256_setzero_ps();
  for (int c = 0; c < k; c += 32) {
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c));
    const __m256i plus_8_sum = _mm256_madd_epi16(_mm256_maddubs_epi16(eights, qv), ones);
    const int shift = (c & 32) != 0 ? 4 : 0;
    const uint8_t* block = panel + (c / 64) * 32 * kInt4PanelRows;
    const uint16_t* group_scales = panel_scales + (c / m.group_size) * kInt4PanelRows;
    #pragma GCC unroll 4
    for (int r = 0; r < NW; ++r) {
      const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * r));
      const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(packed, shift), nibble);
      const __m256i sums = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(codes, qv), ones), plus_8_sum);
      const __m256 scale = _mm256_set1_ps(_cvtsh_ss(group_scales[r]));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[r]);
    }
  }
  #pragma GCC unroll 4
  for (int r = 0; r < NW; ++r) dots[r] = HorizontalSum(acc[r]);
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

// 16 ymm registers: 4 W rows × 2 x rows of fp32 accumulators (8) + 4 W + x; the int8 tile
// needs |q|, ones and a temporary too, so it takes one x row at a time.
constexpr int kFloatMaxMX = 2;
constexpr int kInt8MaxMX = 1;
constexpr TileTable<Bf16T, kFloatMaxMX> kBf16Tiles;
constexpr TileTable<F16T, kFloatMaxMX> kF16Tiles;
constexpr TileTable<Int8T, kInt8MaxMX> kInt8Tiles;
constexpr TileTable<Int4T, kInt8MaxMX> kInt4Tiles;

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
      RunTiles(PackInt8Activations(p, p.w.cols, /*flip=*/0), kInt8Tiles.fns, kInt8MaxMX);
      return;
    }
    case WeightFormat::kInt4: {
      const int64_t ldx = (int64_t{p.w.cols} + 63) / 64 * 64;
      RunTiles(PackInt8Activations(p, ldx, /*flip=*/0), kInt4Tiles.fns, kInt8MaxMX);
      return;
    }
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
