// The AVX2 + FMA + F16C tiled kernels of kernels::Linear (the build's floor, so this
// file needs no target attributes): bf16 and fp16 weights converted to fp32 in registers
// (exact) and multiplied with fp32 x by FMA; int8 by vpmaddubsw on |q| and sign-adjusted
// codes (both <= 127 in magnitude, so the 16-bit pair sums cannot saturate); int4 by
// vpmaddubsw on unpacked unsigned codes and q.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/float16.h"
#include "kernels/weight_allocator.h"
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

// One output of the float tiles from its 8 lane sums over columns [0, c): their
// HorizontalSum, then columns [c, k) one by one in order.
template <WeightFormat F>
inline float FinishFloatDot(__m256 lanes, const float* x, const uint16_t* w, int c, int k) {
  float sum = HorizontalSum(lanes);
  for (int l = c; l < k; ++l) sum = std::fma(x[l], Scalar<F>(w[l]), sum);
  return sum;
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
    for (int r = 0; r < NW; ++r) dots[i * kMaxTileRowsW + r] = FinishFloatDot<F>(acc[i][r], x + int64_t{i} * k, w + int64_t{r} * k, c, k);
  }
}

// The bf16 / fp16 GEMM from kBlockedMinRows rows of x: FloatTile's arithmetic (each
// output's 8 lanes summed by FMA in column order, then FinishFloatDot), so a row of x gets the
// same bits as from FloatTile at m = 1 (batch invariance), but with W converted to fp32 once
// per kBlockRowsX rows of x rather than once per tile call (FloatTile spends as many
// instructions converting W as multiplying), which frees the registers for a 3 × 4 tile
// whose loads no longer bound it. The columns are taken in blocks of kBlockCols so that a
// tile's operands stay in L1; the lanes are carried across the blocks in memory, which keeps
// each lane's order of sums. Per pass over W: kBlockRowsX rows of x (packed once per call
// into blocks of kBlockCols columns), W in tasks of kBlockRowsW rows over the pool.
constexpr int kBlockedMinRows = 32;  // below it the tiles' one conversion per 2 rows of x is cheaper
constexpr int kBlockRowsW = 48;      // W rows per task: the converted block (48 KB) in L1 / L2
constexpr int kBlockRowsX = 128;     // x rows per pass over W: the lanes 192 KB (L2)
constexpr int kBlockCols = 256;      // columns per block
// Floats between rows of the converted W and packed x blocks: a line past kBlockCols, so
// rows do not share L1 sets (at 1 KB apart, or x's own 8 KB / 32 KB, they do: 8 ways).
constexpr int kBlockStride = kBlockCols + 16;
constexpr int kLaneNW = 3;  // W rows per register tile
constexpr int kLaneMX = 4;  // x rows per register tile
static_assert(kLaneMX <= kMaxTileRowsX);

// lanes[(i * kBlockRowsW + r) * 8 + l] += the FMAs of W rows r < NW (wb) with x rows i < MX
// (x), both kBlockStride floats apart, over columns [0, cols), cols a multiple of 8.
// NW · MX accumulators + NW rows of W + one of x fill the 16 ymm registers.
template <int NW, int MX>
void LaneTile(const float* wb, const float* x, int cols, float* lanes) {
  __m256 acc[MX][NW];
  #pragma GCC unroll 8
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 8
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_loadu_ps(lanes + (i * kBlockRowsW + r) * 8);
  for (int c = 0; c < cols; c += 8) {
    __m256 wv[NW];
    #pragma GCC unroll 8
    for (int r = 0; r < NW; ++r) {
      wv[r] = _mm256_load_ps(wb + r * kBlockStride + c);
      asm("" : "+x"(wv[r]));  // held in a register: GCC would fold the load into every FMA
    }
    #pragma GCC unroll 8
    for (int i = 0; i < MX; ++i) {
      const __m256 xv = _mm256_load_ps(x + i * kBlockStride + c);
      #pragma GCC unroll 8
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < MX; ++i)
    #pragma GCC unroll 8
    for (int r = 0; r < NW; ++r) _mm256_storeu_ps(lanes + (i * kBlockRowsW + r) * 8, acc[i][r]);
}

template <int NW, int MX>
struct LaneT {
  static void Run(const float* wb, const float* x, int cols, float* lanes) { LaneTile<NW, MX>(wb, x, cols, lanes); }
};
constexpr TileTable<LaneT, kLaneMX, void (*)(const float*, const float*, int, float*), kLaneNW> kLaneTiles;

template <WeightFormat F>
void BlockedFloatGemm(const TiledOperands& b) {
  const LinearParams& p = *b.p;
  const int n = p.w.rows, k = p.w.cols;
  const int lane_cols = k / 8 * 8;  // the lanes' columns; FinishFloatDot adds the rest
  const int num_blocks = (lane_cols + kBlockCols - 1) / kBlockCols;
  const uint16_t* w = static_cast<const uint16_t*>(p.w.data);
  // x packed once: block c0 / kBlockCols of row i at xp + (c0 / kBlockCols * m + i) * kBlockStride.
  thread_local std::vector<float, WeightAllocator<float>> xp;
  xp.resize(int64_t{num_blocks} * p.m * kBlockStride);
  for (int i = 0; i < p.m; ++i)
    for (int blk = 0; blk < num_blocks; ++blk)
      std::copy_n(p.x + int64_t{i} * k + blk * kBlockCols, std::min(kBlockCols, lane_cols - blk * kBlockCols),
                  xp.data() + (int64_t{blk} * p.m + i) * kBlockStride);
  const float* x_packed = xp.data();  // the lambda below runs on the pool's threads
  for (int chunk = 0; chunk < p.m; chunk += kBlockRowsX) {
    const int mc = std::min(p.m - chunk, kBlockRowsX);
    const float* xc = p.x + int64_t{chunk} * k;
    auto run = [&](int64_t task) {
      const int j_begin = static_cast<int>(task) * kBlockRowsW;
      const int rows = std::min(n - j_begin, kBlockRowsW);
      thread_local std::vector<float, WeightAllocator<float>> wb(int64_t{kBlockRowsW} * kBlockStride);
      thread_local std::vector<float> lanes(int64_t{kBlockRowsX} * kBlockRowsW * 8);
      std::fill(lanes.begin(), lanes.begin() + int64_t{mc} * kBlockRowsW * 8, 0.0f);
      for (int blk = 0; blk < num_blocks; ++blk) {
        const int c0 = blk * kBlockCols;
        const int cols = std::min(kBlockCols, lane_cols - c0);
        for (int r = 0; r < rows; ++r) {
          const uint16_t* src = w + int64_t{j_begin + r} * k + c0;
          for (int c = 0; c < cols; c += 8) _mm256_store_ps(wb.data() + r * kBlockStride + c, Load8<F>(src + c));
        }
        const float* xb = x_packed + (int64_t{blk} * p.m + chunk) * kBlockStride;
        for (int i0 = 0; i0 < mc; i0 += kLaneMX) {
          const int mx = std::min(kLaneMX, mc - i0);
          for (int j0 = 0; j0 < rows; j0 += kLaneNW) {
            const int nw = std::min(kLaneNW, rows - j0);
            kLaneTiles.fns[nw - 1][mx - 1](wb.data() + j0 * kBlockStride, xb + i0 * kBlockStride, cols,
                                           lanes.data() + (int64_t{i0} * kBlockRowsW + j0) * 8);
          }
        }
      }
      float dots[kMaxTileRowsX * kMaxTileRowsW];
      for (int j0 = 0; j0 < rows; j0 += kMaxTileRowsW) {
        const int nw = std::min(kMaxTileRowsW, rows - j0);
        for (int i = 0; i < mc; ++i) {
          for (int r = 0; r < nw; ++r) {
            const __m256 sums = _mm256_loadu_ps(lanes.data() + (int64_t{i} * kBlockRowsW + j0 + r) * 8);
            dots[r] = FinishFloatDot<F>(sums, xc + int64_t{i} * k, w + int64_t{j_begin + j0 + r} * k, lane_cols, k);
          }
          StoreDots(b, j_begin + j0, chunk + i, nw, /*mx=*/1, dots);
        }
      }
    };
    RunTasks(p.pool, (n + kBlockRowsW - 1) / kBlockRowsW, run);
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

// int4 weights: one panel of 16 rows (weight_matrix.h; j0 is a multiple of 16) per tile, a
// lane per row in two ymm (rows 0-7, 8-15), W read as one sequential stream of 64-byte
// units. x is PackInt4Activations' (gemm_tiled.h): the int8 codes q and -8 · Σ q per 32
// columns. A unit's low nibbles are the codes + 8 in [1, 15] of columns 8u .. 8u + 3, its
// high nibbles those of 8u + 4 .. 8u + 7: vpmaddubsw (unsigned codes × x's 4 codes
// broadcast, pairs <= 2 · 15 · 127) into 16-bit sums over the 8 of each 32 columns (<= 8 ·
// 3810 < 2^15: no saturation), then vpmaddwd to the lane's int32, plus -8 · Σ q, which is Σ q
// · code exactly; converted and accumulated by FMA times the 16 rows' scales of the group.
// dots[i * 16 + r] = Σ_g s_g Σ q · code (padding rows included; RunPanelTiles drops them).
// The unpacked codes serve all MX rows of x, whose arithmetic does not depend on MX.
template <int MX>
void Int4PanelTile(const TiledOperands& b, int j0, int i0, float* dots) {
  const WeightMatrix& m = b.p->w;
  const int num_groups = m.num_groups();
  const int halves_per_group = m.group_size / 32;
  // 32-column halves: those past the last group hold only padding (x and codes - 8 are 0).
  const int halves = static_cast<int>(std::min<int64_t>(b.ldx / 32, int64_t{num_groups} * halves_per_group));
  const uint8_t* w = static_cast<const uint8_t*>(m.data) + Int4CodeOffset(m.cols, j0, 0);
  const uint16_t* scales = m.group_scales + Int4ScaleIndex(num_groups, j0, 0);
  const int8_t* q = static_cast<const int8_t*>(b.x) + int64_t{i0} * b.ldx;
  const int64_t ld_sums = b.ldx / 32;
  const int32_t* sums = b.x_sums + int64_t{i0} * ld_sums;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  __m256 acc[MX][2];
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int h = 0; h < halves; ++h) {
    __m256i sum16[MX][2];
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) sum16[i][0] = sum16[i][1] = _mm256_setzero_si256();
    #pragma GCC unroll 4
    for (int u = 4 * h; u < 4 * h + 4; ++u) {
      #pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + int64_t{u} * 64 + 32 * half));
        const __m256i low = _mm256_and_si256(v, nibble);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
        #pragma GCC unroll 4
        for (int i = 0; i < MX; ++i) {
          int32_t x_low, x_high;
          std::memcpy(&x_low, q + i * b.ldx + u * 8, sizeof(x_low));
          std::memcpy(&x_high, q + i * b.ldx + u * 8 + 4, sizeof(x_high));
          sum16[i][half] = _mm256_add_epi16(sum16[i][half], _mm256_maddubs_epi16(low, _mm256_set1_epi32(x_low)));
          sum16[i][half] = _mm256_add_epi16(sum16[i][half], _mm256_maddubs_epi16(high, _mm256_set1_epi32(x_high)));
        }
      }
    }
    const uint16_t* group_scales = scales + (h / halves_per_group) * kInt4PanelRows;
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group_scales)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group_scales + 8)));
    #pragma GCC unroll 4
    for (int i = 0; i < MX; ++i) {
      const __m256i correction = _mm256_set1_epi32(sums[i * ld_sums + h]);
      const __m256i d0 = _mm256_add_epi32(_mm256_madd_epi16(sum16[i][0], ones), correction);
      const __m256i d1 = _mm256_add_epi32(_mm256_madd_epi16(sum16[i][1], ones), correction);
      acc[i][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), s0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), s1, acc[i][1]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MX; ++i) {
    _mm256_storeu_ps(dots + i * kInt4PanelRows, acc[i][0]);
    _mm256_storeu_ps(dots + i * kInt4PanelRows + 8, acc[i][1]);
  }
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
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { Int4PanelTile<MX>(b, j0, i0, d); }
};

template <int NW, int MX>
struct Int8RowsT {
  static_assert(MX == 1);
  static void Run(const TiledOperands& b, int j0, int i0, float* d) { Int8RowsTile<NW>(b, j0, i0, d); }
};

// Rows of x per tile. 16 ymm registers: 4 W rows × 2 x rows of fp32 accumulators (8) + 4 W
// + x. The int8 tile at 2 x rows spills two of its 8 accumulators (|q|, ones and a temporary
// besides) and was still faster than 1 row at m = 512 in linear_bench; the int4 tile unpacks a
// unit's codes once for all its x rows, 3 rows in 6 fp32 and 6 16-bit accumulators (3 was
// measured on the 4-row panels it replaced, model_bench 1B prefill: 3 rows 47.9 / 53.3 tok/s
// against 2 rows 41.6 / 38.5, 4 no faster; the 16-row tile at 4 rows against 3, Zen 3,
// linear_bench m = 8 / 512, five interleaved rounds: 4 ahead in three, behind in two, kept 3).
constexpr int kFloatMaxMX = 2;
constexpr int kInt8MaxMX = 2;
constexpr int kInt4MaxMX = 3;
constexpr TileTable<Bf16T, kFloatMaxMX> kBf16Tiles;
constexpr TileTable<F16T, kFloatMaxMX> kF16Tiles;
constexpr TileTable<Int8T, kInt8MaxMX> kInt8Tiles;
constexpr TileTable<Int4T, kInt4MaxMX, TileFn, 1> kInt4Tiles;  // one tile per MX: fns[0]
constexpr TileTable<Int8RowsT, 1> kInt8RowsTiles;

// bf16 / fp16: the tiles, or from kBlockedMinRows rows of x the blocked GEMM (the same bits).
template <WeightFormat F>
void RunFloat(const TiledOperands& b, const TileFn (&tiles)[kMaxTileRowsW][kMaxTileRowsX]) {
  if (b.p->m >= kBlockedMinRows) {
    BlockedFloatGemm<F>(b);
  } else {
    RunTiles(b, tiles, kFloatMaxMX);
  }
}

}  // namespace

void TiledLinearAvx2(const LinearParams& p) {
  TiledOperands b;
  b.p = &p;
  b.x_row_bytes = int64_t{p.w.cols} * sizeof(float);
  switch (p.w.format) {
    case WeightFormat::kBF16:
      RunFloat<WeightFormat::kBF16>(b, kBf16Tiles.fns);
      return;
    case WeightFormat::kF16:
      RunFloat<WeightFormat::kF16>(b, kF16Tiles.fns);
      return;
    case WeightFormat::kInt8: {
      RunTiles(PackInt8Activations(p, p.w.cols, /*flip=*/0), UseRowsTile(p, p.w.cols) ? kInt8RowsTiles.fns : kInt8Tiles.fns,
               kInt8MaxMX);
      return;
    }
    case WeightFormat::kInt4:
      RunPanelTiles(PackInt4Activations(p), kInt4PanelRows, kInt4Tiles.fns[0], kInt4MaxMX);
      return;
    case WeightFormat::kF32:
      break;  // LinearF32's
  }
}

}  // namespace kvspan::kernels::internal
