// The prefill GEMM of kernels::Linear on AVX-512 (bf16, int8 and int4 weights from
// kPanelGemmMinRows rows of x; gemm_tiled.h). The decode tiles (gemm_tiled_avx512.cc) end
// every tile with horizontal sums and stream both operands through L2 for every 4 rows of
// W; here each task repacks 32 rows of W once per call ("a panel") so that the lanes of the
// register tile are 32 output columns (two zmm: lane l of vector v = W row j0 + 16 v + l),
// then runs every row of x against the panel, up to kMaxRows rows of x per register tile,
// with no horizontal sums left at the end. Per format:
//   bf16  the panel holds, per pair of columns (2c, 2c + 1), the 32 rows' two bf16 side by
//         side as one 32-bit lane ([ceil(k / 2)][32] uint32; 128 KB at k = 2048, in L2).
//         vdpbf16ps with x's pair broadcast (x rounded to bf16, kAvx512Bf16Dot), or,
//         exactly, the lanes shifted / masked to fp32 (the even and odd columns) and two
//         FMAs with x[2c] and x[2c + 1] broadcast. 12 rows of x.
//   int8  per quad of columns the 32 rows' 4 signed codes as one lane; vpdpbusd of x's quad
//         broadcast (q + 128, unsigned, as the decode tiles take it) from -128 · row_sum:
//         the exact Σ q · code of every other int8 tile, then RunTiles' epilogue
//         (v · (s_x · s_w) + bias + beta · y). 12 rows of x.
//   int4  the nibbles unpacked to codes + 8 as bytes in quads, the group scales as fp32
//         ([num_groups][32]); per 32 columns of a row of x, vpdpbusd of the codes with x's
//         quads (PackInt8Activations' signed q) from -8 · Σ q of those 32 (so the integer sum
//         is Σ q · code exactly), then one conversion and one FMA with the 32 rows' scales of
//         the group: another rounding order than the 4-row tile, the same bound. 6 rows of x
//         (each has an integer and an fp32 accumulator per output vector).
// Measured (linear_bench, m = 512): docs/performance.md, "The prefill GEMM". Like
// gemm_tiled_avx512.cc, only functions marked KVSPAN_AVX512 contain AVX-512 code.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/float16.h"
#include "kernels/cpu/gemm_tiled.h"

// GCC 12's _mm512_undefined_* (behind _mm512_castsi256_si512) read a variable on purpose
// uninitialized (avx512fintrin.h: `__m512i __Y = __Y;`) and warn at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace kvspan::kernels::internal {
namespace {

// NOTE: every loop over a tile's rows of x (MR) is unrolled by pragma: GCC keeps the
// accumulator arrays in memory otherwise.

constexpr int kPanelCols = 32;  // output columns (rows of W) per panel and task

// acc + vpdpbusd(u8, s8), in asm: GCC 12 copies the accumulators of the intrinsic between
// registers at every step of the tiles' loops (a register move per vpdpbusd).
KVSPAN_AVX512_INLINE __m512i DotBytes(__m512i acc, __m512i u8, __m512i s8) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
}

// Transposes the 16 x 16 matrix of 32-bit lanes in r[0..15] in place.
KVSPAN_AVX512_INLINE void Transpose16x16(__m512i (&r)[16]) {
  __m512i t[16];
  #pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  #pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4b + q] now holds, in its 128-bit lane L, column 4L + q of rows 4b .. 4b + 3; two
  // rounds of 128-bit shuffles gather column c = 4L + q's four lanes into t[c].
  #pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512i a = _mm512_shuffle_i32x4(r[q], r[4 + q], 0x88), b = _mm512_shuffle_i32x4(r[q], r[4 + q], 0xdd);
    const __m512i c = _mm512_shuffle_i32x4(r[8 + q], r[12 + q], 0x88), d = _mm512_shuffle_i32x4(r[8 + q], r[12 + q], 0xdd);
    t[q] = _mm512_shuffle_i32x4(a, c, 0x88);
    t[8 + q] = _mm512_shuffle_i32x4(a, c, 0xdd);
    t[4 + q] = _mm512_shuffle_i32x4(b, d, 0x88);
    t[12 + q] = _mm512_shuffle_i32x4(b, d, 0xdd);
  }
  #pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Packs W rows [j0, j0 + 32) into `panel` ([lanes][32] uint32): 16 rows by 16 lanes at a
// time, transposed in registers, so that the panel is written in whole lines. load(row, lane)
// gives the 16 lanes [lane, lane + 16) of row `row` as one zmm (zero past the row's end);
// rows at or past `rows_readable` read as zero. Lanes past `lanes` are not written.
template <class Load>
KVSPAN_AVX512_INLINE void TransposeIntoPanel(int j0, int rows_readable, int lanes, const Load& load,
                                             uint32_t* panel) {
  for (int half = 0; half < 2; ++half) {
    const int r0 = j0 + 16 * half;
    for (int lane = 0; lane < lanes; lane += 16) {
      __m512i r[16];
      #pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) r[i] = r0 + i < rows_readable ? load(r0 + i, lane) : _mm512_setzero_si512();
      Transpose16x16(r);
      const int n_out = std::min(16, lanes - lane);
      for (int q = 0; q < n_out; ++q) _mm512_storeu_si512(panel + (lane + q) * kPanelCols + 16 * half, r[q]);
    }
  }
}

// The columns [j0, j0 + 32) of y a tile writes: masks of those that exist, and their bias.
struct PanelColumns {
  __mmask16 m0, m1;
  __m512 bias0, bias1;  // zero without a bias
};

KVSPAN_AVX512_INLINE PanelColumns ColumnsOf(const LinearParams& p, int j0) {
  const int cols = std::min(kPanelCols, p.w.rows - j0);
  PanelColumns c;
  c.m0 = static_cast<__mmask16>((uint32_t{1} << std::min(16, cols)) - 1);
  c.m1 = static_cast<__mmask16>((uint32_t{1} << std::max(0, cols - 16)) - 1);
  c.bias0 = p.bias != nullptr ? _mm512_maskz_loadu_ps(c.m0, p.bias + j0) : _mm512_setzero_ps();
  c.bias1 = p.bias != nullptr ? _mm512_maskz_loadu_ps(c.m1, p.bias + j0 + 16) : _mm512_setzero_ps();
  return c;
}

// y[i, j0 .. j0 + 32) = v (+ beta · y), the columns that exist.
KVSPAN_AVX512_INLINE void StoreColumns(const LinearParams& p, const PanelColumns& c, int i, int j0, __m512 v0,
                                       __m512 v1) {
  float* y = p.y + int64_t{i} * p.w.rows + j0;
  if (p.beta != 0.0f) {
    const __m512 beta = _mm512_set1_ps(p.beta);
    v0 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(c.m0, y), v0);
    v1 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(c.m1, y + 16), v1);
  }
  _mm512_mask_storeu_ps(y, c.m0, v0);
  _mm512_mask_storeu_ps(y + 16, c.m1, v1);
}

// fns[MR - 1] = &T<MR>::Run for MR in [1, kMaxRows]: the tiles of 1 .. kMaxRows rows of x.
template <template <int> class T, int kMaxRows>
struct RowTiles {
  decltype(&T<1>::Run) fns[kMaxRows] = {};
  constexpr RowTiles() { Fill<1>(); }
  template <int MR>
  constexpr void Fill() {
    fns[MR - 1] = &T<MR>::Run;
    if constexpr (MR < kMaxRows) Fill<MR + 1>();
  }
};

// One task per panel of W: for each, `pack(j0)` repacks it (into the running thread's own
// buffers: a thread_local named in `pack` is that thread's) and then every row of x runs
// against it, tiles.fns[rows - 1](args..., j0, i0) per tile of up to kMaxRows rows.
template <template <int> class T, int kMaxRows, class Pack, class... Args>
void RunPanels(const LinearParams& p, const RowTiles<T, kMaxRows>& tiles, const Pack& pack, const Args&... args) {
  RunTasks(p.pool, (p.w.rows + kPanelCols - 1) / kPanelCols, [&](int64_t task) {
    const int j0 = static_cast<int>(task) * kPanelCols;
    const auto panel = pack(j0);
    for (int i0 = 0; i0 < p.m; i0 += kMaxRows) tiles.fns[std::min(kMaxRows, p.m - i0) - 1](p, panel, args..., j0, i0);
  });
}

// Lanes of a panel of a row-major matrix of Element (bf16 bits: lanes of 2 columns; int8
// codes: of 4): ceil(k / per lane) rounded up to whole groups of 16 (an AMX tile reads 16).
template <class Element>
int PanelLanes(int k) {
  constexpr int kPerLane = 4 / sizeof(Element);
  return (k + 16 * kPerLane - 1) / (16 * kPerLane) * 16;
}

// Writes the panel of W rows [j0, j0 + 32) into `panel` (PanelLanes x 32 uint32), zero past k
// (the last lane may be partial) and in the padding lanes.
template <class Element>
KVSPAN_AVX512 void PackRowMajorPanelInto(const WeightMatrix& w, int j0, uint32_t* panel) {
  constexpr int kPerLane = 4 / sizeof(Element);
  const int k = w.cols;
  const Element* base = static_cast<const Element*>(w.data);
  TransposeIntoPanel(
      j0, w.rows, PanelLanes<Element>(k),
      [&](int row, int lane) KVSPAN_AVX512_LAMBDA {
        const int elements = std::min(16 * kPerLane, k - kPerLane * lane);
        const Element* at = base + int64_t{row} * k + kPerLane * lane;
        if constexpr (kPerLane == 2) {
          return _mm512_maskz_loadu_epi16(elements >= 32 ? ~__mmask32{0} : (__mmask32{1} << elements) - 1, at);
        } else {
          return _mm512_maskz_loadu_epi8(elements >= 64 ? ~__mmask64{0} : (__mmask64{1} << elements) - 1, at);
        }
      },
      panel);
}

// The same into the running thread's own buffer, valid until its next call.
template <class Element>
const uint32_t* PackRowMajorPanel(const WeightMatrix& w, int j0) {
  thread_local std::vector<uint32_t> panel;
  panel.resize(int64_t{PanelLanes<Element>(w.cols)} * kPanelCols);
  PackRowMajorPanelInto<Element>(w, j0, panel.data());
  return panel.data();
}

// ---- bf16 ------------------------------------------------------------------------------

constexpr int kBf16MaxRows = 12;

// x: bf16 pairs (kDot: uint16_t [m, ldx], ldx even) or fp32 (exact: float [m, ldx], ldx
// even, x[2c + 1] readable).
template <bool kDot>
struct Bf16Tile {
  template <int MR>
  struct T {
    KVSPAN_AVX512 static void Run(const LinearParams& p, const uint32_t* panel, const void* x, int64_t ldx, int j0,
                                  int i0) {
      const int pairs = (p.w.cols + 1) / 2;
      __m512 acc[MR][2];
      #pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
      for (int c2 = 0; c2 < pairs; ++c2) {
        const __m512i w0 = _mm512_loadu_si512(panel + c2 * kPanelCols);
        const __m512i w1 = _mm512_loadu_si512(panel + c2 * kPanelCols + 16);
        if constexpr (kDot) {
          const uint16_t* xb = static_cast<const uint16_t*>(x) + int64_t{i0} * ldx + 2 * c2;
          #pragma GCC unroll 12
          for (int i = 0; i < MR; ++i) {
            uint32_t pair;
            std::memcpy(&pair, xb + i * ldx, sizeof(pair));
            const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(pair));
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], xv, (__m512bh)w0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], xv, (__m512bh)w1);
          }
        } else {
          const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
          const __m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)), o0 = _mm512_castsi512_ps(_mm512_and_si512(w0, high));
          const __m512 e1 = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)), o1 = _mm512_castsi512_ps(_mm512_and_si512(w1, high));
          const float* xf = static_cast<const float*>(x) + int64_t{i0} * ldx + 2 * c2;
          #pragma GCC unroll 12
          for (int i = 0; i < MR; ++i) {
            const __m512 xe = _mm512_set1_ps(xf[i * ldx]), xo = _mm512_set1_ps(xf[i * ldx + 1]);
            acc[i][0] = _mm512_fmadd_ps(xo, o0, _mm512_fmadd_ps(xe, e0, acc[i][0]));
            acc[i][1] = _mm512_fmadd_ps(xo, o1, _mm512_fmadd_ps(xe, e1, acc[i][1]));
          }
        }
      }
      const PanelColumns c = ColumnsOf(p, j0);
      #pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        StoreColumns(p, c, i0 + i, j0, _mm512_add_ps(acc[i][0], c.bias0), _mm512_add_ps(acc[i][1], c.bias1));
      }
    }
  };
};
constexpr RowTiles<Bf16Tile<true>::T, kBf16MaxRows> kBf16DotTiles;
constexpr RowTiles<Bf16Tile<false>::T, kBf16MaxRows> kBf16ExactTiles;

// ---- int4 ------------------------------------------------------------------------------

constexpr int kInt4MaxRows = 6;

// The unpacked int4 panel: codes + 8 as bytes in quads of columns ([16 ceil(k / 64)][32]
// uint32, from the 4-row panels of weight_matrix.h) and the group scales as fp32
// ([num_groups][32]). Rows past the padded panels read as code 0 - 8 and rows past w.rows
// get scale 0: their outputs, which are not stored, are finite.
struct Int4Panel {
  const uint32_t* codes;
  const float* scales;
};

KVSPAN_AVX512 Int4Panel PackInt4Panel(const WeightMatrix& w, int j0) {
  thread_local std::vector<uint32_t> codes;
  thread_local std::vector<float> scales;
  const int blocks = (w.cols + 63) / 64, num_groups = w.num_groups();
  codes.resize(int64_t{blocks} * 16 * kPanelCols);
  scales.resize(int64_t{num_groups} * kPanelCols);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  // A lane is a quad of columns: 16 of them are one 64-column block of a row (32 bytes).
  TransposeIntoPanel(
      j0, static_cast<int>(Int4PaddedRows(w.rows)), blocks * 16,
      [&](int row, int quad) KVSPAN_AVX512_LAMBDA {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + Int4CodeOffset(w.cols, row, 4 * quad)));
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(b, nibble)),
                                  _mm256_and_si256(_mm256_srli_epi16(b, 4), nibble), 1);
      },
      codes.data());
  for (int g = 0; g < num_groups; ++g) {
    for (int c = 0; c < kPanelCols; ++c) {
      const int row = j0 + c;
      scales[g * kPanelCols + c] = row < w.rows ? HalfToFloat(w.group_scales[Int4ScaleIndex(num_groups, row, g)]) : 0.0f;
    }
  }
  return {codes.data(), scales.data()};
}

// x of the int4 GEMM: PackInt8Activations' q ([m, ldx], ldx = 64 ceil(k / 64), zero past
// k) and scales, and -8 · Σ q per 32 columns ([m][ldx / 32] int32).
struct Int4X {
  TiledOperands q;
  const int32_t* sums = nullptr;
  int subgroups = 0;  // ldx / 32
};

Int4X PackInt4GemmActivations(const LinearParams& p) {
  Int4X x;
  x.q = PackInt8Activations(p, (p.w.cols + 63) / 64 * 64, /*flip=*/0);
  x.subgroups = static_cast<int>(x.q.ldx / 32);
  thread_local std::vector<int32_t> sums;
  sums.resize(int64_t{p.m} * x.subgroups);
  const int8_t* q = static_cast<const int8_t*>(x.q.x);
  for (int64_t e = 0; e < int64_t{p.m} * x.subgroups; ++e) {
    int32_t sum = 0;
    for (int c = 0; c < 32; ++c) sum += q[e * 32 + c];
    sums[e] = -8 * sum;
  }
  x.sums = sums.data();
  return x;
}

template <int MR>
struct Int4Tile {
  KVSPAN_AVX512 static void Run(const LinearParams& p, const Int4Panel& panel, const Int4X& x, int j0, int i0) {
    const int group_size = p.w.group_size;
    const int8_t* xq = static_cast<const int8_t*>(x.q.x) + int64_t{i0} * x.q.ldx;
    const int32_t* xs = x.sums + int64_t{i0} * x.subgroups;
    __m512 acc[MR][2];
    #pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int sg = 0; sg < x.subgroups; ++sg) {
      __m512i dot[MR][2];
      #pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) dot[i][0] = dot[i][1] = _mm512_set1_epi32(xs[i * x.subgroups + sg]);
      const uint32_t* wq = panel.codes + sg * 8 * kPanelCols;
      #pragma GCC unroll 2
      for (int quad = 0; quad < 8; ++quad) {
        const __m512i w0 = _mm512_loadu_si512(wq + quad * kPanelCols);
        const __m512i w1 = _mm512_loadu_si512(wq + quad * kPanelCols + 16);
        #pragma GCC unroll 6
        for (int i = 0; i < MR; ++i) {
          int32_t four;
          std::memcpy(&four, xq + i * x.q.ldx + sg * 32 + quad * 4, sizeof(four));
          const __m512i xv = _mm512_set1_epi32(four);
          dot[i][0] = DotBytes(dot[i][0], w0, xv);
          dot[i][1] = DotBytes(dot[i][1], w1, xv);
        }
      }
      const float* sc = panel.scales + (sg * 32 / group_size) * kPanelCols;
      const __m512 s0 = _mm512_loadu_ps(sc), s1 = _mm512_loadu_ps(sc + 16);
      #pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][0]), s0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][1]), s1, acc[i][1]);
      }
    }
    const PanelColumns c = ColumnsOf(p, j0);
    #pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m512 s_x = _mm512_set1_ps(x.q.x_scales[i0 + i]);
      StoreColumns(p, c, i0 + i, j0, _mm512_fmadd_ps(acc[i][0], s_x, c.bias0), _mm512_fmadd_ps(acc[i][1], s_x, c.bias1));
    }
  }
};
constexpr RowTiles<Int4Tile, kInt4MaxRows> kInt4Tiles;

// ---- int8 ------------------------------------------------------------------------------

constexpr int kInt8MaxRows = 12;

// The weight scales of a panel's columns.
struct Int8Scales {
  __m512 s0, s1;
};

KVSPAN_AVX512_INLINE Int8Scales Int8ScalesOf(const LinearParams& p, const PanelColumns& c, int j0) {
  return {_mm512_maskz_loadu_ps(c.m0, p.w.scales + j0), _mm512_maskz_loadu_ps(c.m1, p.w.scales + j0 + 16)};
}

// RunTiles' epilogue (StoreDots), lane by lane, for row i of y from its exact integer sums:
// fma(v, s_x · s_w, bias), then + beta · y.
KVSPAN_AVX512_INLINE void StoreInt8Row(const LinearParams& p, const PanelColumns& c, const Int8Scales& s_w, float x_scale,
                                       int i, int j0, __m512i sum0, __m512i sum1) {
  const __m512 s_x = _mm512_set1_ps(x_scale);
  StoreColumns(p, c, i, j0, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum0), _mm512_mul_ps(s_x, s_w.s0), c.bias0),
               _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum1), _mm512_mul_ps(s_x, s_w.s1), c.bias1));
}

// x: PackInt8Activations' q + 128.
template <int MR>
struct Int8Tile {
  KVSPAN_AVX512 static void Run(const LinearParams& p, const uint32_t* codes, const TiledOperands& x, int j0, int i0) {
    const PanelColumns c = ColumnsOf(p, j0);
    const __m512i minus_128 = _mm512_set1_epi32(-128);
    const __m512i start0 = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(c.m0, p.w.row_sums + j0), minus_128);
    const __m512i start1 = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(c.m1, p.w.row_sums + j0 + 16), minus_128);
    __m512i acc[MR][2];
    #pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = start0;
      acc[i][1] = start1;
    }
    const uint8_t* xq = static_cast<const uint8_t*>(x.x) + int64_t{i0} * x.ldx;
    const int quads = (p.w.cols + 3) / 4;
    for (int c4 = 0; c4 < quads; ++c4) {
      const __m512i w0 = _mm512_loadu_si512(codes + c4 * kPanelCols);
      const __m512i w1 = _mm512_loadu_si512(codes + c4 * kPanelCols + 16);
      #pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        int32_t four;
        std::memcpy(&four, xq + i * x.ldx + 4 * c4, sizeof(four));
        const __m512i xv = _mm512_set1_epi32(four);
        acc[i][0] = DotBytes(acc[i][0], xv, w0);
        acc[i][1] = DotBytes(acc[i][1], xv, w1);
      }
    }
    const Int8Scales scales = Int8ScalesOf(p, c, j0);
    #pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) StoreInt8Row(p, c, scales, x.x_scales[i0 + i], i0 + i, j0, acc[i][0], acc[i][1]);
  }
};
constexpr RowTiles<Int8Tile, kInt8MaxRows> kInt8Tiles;


// ---- AMX -------------------------------------------------------------------------------
//
// Eight tile registers of 16 rows x 64 bytes (palette 1). A tile of x (A) is 16 rows of x x
// 64 bytes of columns, a tile of W (B) 16 lanes of a panel x 16 outputs (half a panel: its
// rows are kPanelCols lanes apart), a tile of sums (C) 16 rows x 16 outputs (int32 / fp32).
// Every tile instruction is an asm with its memory named ("memory" clobbers): GCC 12's
// intrinsics leave tileloadd's memory operand out, so stores to a buffer a tile then reads
// could legally be moved past it.

#define KVSPAN_TILE_LOAD(t, base, stride) \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #t : : "r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
#define KVSPAN_TILE_STORE(t, base, stride) \
  asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" : : "r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
#define KVSPAN_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::)
// c += a · b (AT&T order: b, a, c).
#define KVSPAN_TILE_DP(op, c, a, b) asm volatile(#op " %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Loads the calling thread's tile configuration: tmm0..7 all 16 x 64 bytes. ldtilecfg by asm
// with the whole 64-byte struct as its operand: GCC 12's _tile_loadconfig names only 8 bytes,
// so at -O3 the stores that fill the rest are dropped and the first tile instruction faults.
void ConfigureTiles() {
  static const TileConfig config = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = 64;
      c.rows[t] = 16;
    }
    return c;
  }();
  asm volatile("ldtilecfg %0" : : "m"(config));
}

// Frees the tile state (the kernel then need not save it at context switches).
void ReleaseTiles() { asm volatile("tilerelease" ::: "memory"); }

// Packed panels a task of the AMX GEMM keeps (in L2, beside a block of rows of x: the L2 of
// the CPUs with AMX, Sapphire Rapids and later, is 2 MB per core).
constexpr int64_t kAmxPanelBytes = int64_t{1} << 20;

// The AMX GEMM's walk: tasks of up to kAmxPanelBytes of consecutive panels (fewer when that
// would leave fewer than two tasks per thread), each packed once into the running thread's
// buffer; then, with the tiles configured, every block of `block_rows` rows of x against each
// panel of the task: rows(panel, j0, i0). The block of x is read from memory once per task
// and from L2 for the task's other panels (one panel per task read every row of x from
// memory again for every 32 outputs: 25 MB per panel for bf16 at m = 512, k = 8192).
template <class Element, class Rows>
void RunAmxPanelGroups(const LinearParams& p, int block_rows, const Rows& rows) {
  const int64_t panel_words = int64_t{PanelLanes<Element>(p.w.cols)} * kPanelCols;
  const int panels = (p.w.rows + kPanelCols - 1) / kPanelCols;
  const int threads = p.pool != nullptr ? p.pool->num_threads() : 1;
  // One block of rows: nothing to reuse, so one panel per task (the finest division).
  const int group = p.m <= block_rows ? 1
                                      : static_cast<int>(std::clamp<int64_t>(
                                            std::min<int64_t>(kAmxPanelBytes / (panel_words * 4), panels / (2 * threads)), 1, panels));
  RunTasks(p.pool, (panels + group - 1) / group, [&](int64_t task) {
    thread_local std::vector<uint32_t> packed;
    const int first = static_cast<int>(task) * group, count = std::min(group, panels - first);
    packed.resize(count * panel_words);
    for (int g = 0; g < count; ++g) PackRowMajorPanelInto<Element>(p.w, (first + g) * kPanelCols, packed.data() + g * panel_words);
    ConfigureTiles();
    for (int i0 = 0; i0 < p.m; i0 += block_rows) {
      for (int g = 0; g < count; ++g) rows(packed.data() + g * panel_words, (first + g) * kPanelCols, i0);
    }
    ReleaseTiles();
  });
}

constexpr int kTileRows = 16;

// x of the bf16 GEMM: each row split exactly into three bf16 parts, hi = bf16(x), mid =
// bf16(x - hi), lo = x - hi - mid (both differences exact in fp32; lo has at most 8
// significant bits, so it is a bf16 exactly), part-major: [3][rows][ldx], zero past k and
// past p.m. Finite x whose parts stay normal (|x| >= 2^-110: AMX treats bf16 subnormals as
// zero) is represented exactly.
KVSPAN_AVX512 void SplitRowsToBf16x3(const LinearParams& p, int64_t ldx, int rows, uint16_t* dst) {
  const int k = p.w.cols;
  const int64_t part = int64_t{rows} * ldx;
  for (int i = 0; i < p.m; ++i) {
    const float* src = p.x + int64_t{i} * k;
    uint16_t* out = dst + i * ldx;
    for (int64_t c = 0; c < ldx; c += 16) {
      const int64_t left = std::min<int64_t>(16, std::max<int64_t>(0, k - c));
      __m512 r = _mm512_maskz_loadu_ps(static_cast<__mmask16>((uint32_t{1} << left) - 1), src + c);
      for (int64_t at = 0; at < 3 * part; at += part) {
        const __m256i b = FloatToBf16x16(r);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + at + c), b);
        r = _mm512_sub_ps(r, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
      }
    }
  }
}

// bf16: per 16 rows of x and a panel, C tiles tmm0 / tmm1 sum hi · W, tmm2 / tmm3 mid · W
// and lo · W (the two halves of the panel), so that the sums of the small parts round
// against their own magnitude; y = (hi sum + small sum) + bias (+ beta · y).
KVSPAN_AVX512 void AmxBf16Rows(const LinearParams& p, const uint32_t* panel, const uint16_t* x, int64_t ldx,
                               int64_t part, int j0, int i0, float (*sums)[kTileRows][kPanelCols]) {
  KVSPAN_TILE_ZERO(0);
  KVSPAN_TILE_ZERO(1);
  KVSPAN_TILE_ZERO(2);
  KVSPAN_TILE_ZERO(3);
  const uint16_t* hi = x + int64_t{i0} * ldx;
  const int64_t x_stride = ldx * sizeof(uint16_t);
  constexpr int64_t kPanelStride = kPanelCols * sizeof(uint32_t);
  for (int64_t c = 0; c < ldx; c += 32) {  // 32 columns = 16 lanes of pairs
    const uint32_t* w = panel + c / 2 * kPanelCols;
    KVSPAN_TILE_LOAD(6, w, kPanelStride);
    KVSPAN_TILE_LOAD(7, w + 16, kPanelStride);
    KVSPAN_TILE_LOAD(4, hi + c, x_stride);
    KVSPAN_TILE_DP(tdpbf16ps, 0, 4, 6);
    KVSPAN_TILE_DP(tdpbf16ps, 1, 4, 7);
    KVSPAN_TILE_LOAD(5, hi + part + c, x_stride);
    KVSPAN_TILE_DP(tdpbf16ps, 2, 5, 6);
    KVSPAN_TILE_DP(tdpbf16ps, 3, 5, 7);
    KVSPAN_TILE_LOAD(4, hi + 2 * part + c, x_stride);
    KVSPAN_TILE_DP(tdpbf16ps, 2, 4, 6);
    KVSPAN_TILE_DP(tdpbf16ps, 3, 4, 7);
  }
  constexpr int64_t kSumStride = kPanelCols * sizeof(float);
  KVSPAN_TILE_STORE(0, &sums[0][0][0], kSumStride);
  KVSPAN_TILE_STORE(1, &sums[0][0][16], kSumStride);
  KVSPAN_TILE_STORE(2, &sums[1][0][0], kSumStride);
  KVSPAN_TILE_STORE(3, &sums[1][0][16], kSumStride);
  const PanelColumns cols = ColumnsOf(p, j0);
  for (int i = 0; i < std::min(kTileRows, p.m - i0); ++i) {
    const __m512 v0 = _mm512_add_ps(_mm512_load_ps(&sums[0][i][0]), _mm512_load_ps(&sums[1][i][0]));
    const __m512 v1 = _mm512_add_ps(_mm512_load_ps(&sums[0][i][16]), _mm512_load_ps(&sums[1][i][16]));
    StoreColumns(p, cols, i0 + i, j0, _mm512_add_ps(v0, cols.bias0), _mm512_add_ps(v1, cols.bias1));
  }
}

// int8: per 32 rows of x (two A tiles, tmm4 / tmm5) and a panel (two B tiles, tmm6 / tmm7),
// four C tiles of exact int32 sums Σ q · code (tdpbssd: signed x signed), then the int8
// epilogue of every other int8 kernel.
KVSPAN_AVX512 void AmxInt8Rows(const LinearParams& p, const uint32_t* panel, const TiledOperands& x, int j0, int i0,
                               int32_t (*sums)[kPanelCols]) {
  KVSPAN_TILE_ZERO(0);
  KVSPAN_TILE_ZERO(1);
  KVSPAN_TILE_ZERO(2);
  KVSPAN_TILE_ZERO(3);
  const uint8_t* x0 = static_cast<const uint8_t*>(x.x) + int64_t{i0} * x.ldx;
  const uint8_t* x1 = x0 + kTileRows * x.ldx;
  constexpr int64_t kPanelStride = kPanelCols * sizeof(uint32_t);
  for (int64_t c = 0; c < x.ldx; c += 64) {  // 64 columns = 16 lanes of quads
    const uint32_t* w = panel + c / 4 * kPanelCols;
    KVSPAN_TILE_LOAD(6, w, kPanelStride);
    KVSPAN_TILE_LOAD(7, w + 16, kPanelStride);
    KVSPAN_TILE_LOAD(4, x0 + c, x.ldx);
    KVSPAN_TILE_LOAD(5, x1 + c, x.ldx);
    KVSPAN_TILE_DP(tdpbssd, 0, 4, 6);
    KVSPAN_TILE_DP(tdpbssd, 1, 4, 7);
    KVSPAN_TILE_DP(tdpbssd, 2, 5, 6);
    KVSPAN_TILE_DP(tdpbssd, 3, 5, 7);
  }
  constexpr int64_t kSumStride = kPanelCols * sizeof(int32_t);
  KVSPAN_TILE_STORE(0, &sums[0][0], kSumStride);
  KVSPAN_TILE_STORE(1, &sums[0][16], kSumStride);
  KVSPAN_TILE_STORE(2, &sums[kTileRows][0], kSumStride);
  KVSPAN_TILE_STORE(3, &sums[kTileRows][16], kSumStride);
  const PanelColumns cols = ColumnsOf(p, j0);
  const Int8Scales scales = Int8ScalesOf(p, cols, j0);
  for (int i = 0; i < std::min(2 * kTileRows, p.m - i0); ++i) {
    StoreInt8Row(p, cols, scales, x.x_scales[i0 + i], i0 + i, j0, _mm512_load_si512(&sums[i][0]),
                 _mm512_load_si512(&sums[i][16]));
  }
}

#undef KVSPAN_TILE_LOAD
#undef KVSPAN_TILE_STORE
#undef KVSPAN_TILE_ZERO
#undef KVSPAN_TILE_DP

}  // namespace

void PanelGemmBf16(const LinearParams& p, bool dot) {
  // x as the tiles take it: bf16 (dot), or fp32 copied only when k is odd (the last pair's
  // x[2c + 1] is then a zero of the copy, not past the row).
  const int k = p.w.cols;
  const int64_t ldx = 2 * int64_t{(k + 1) / 2};
  const void* x = p.x;
  thread_local std::vector<uint16_t> xb;
  thread_local std::vector<float> xf;
  if (dot) {
    xb.resize(p.m * ldx);
    RoundRowsToBf16(p, ldx, xb.data());
    x = xb.data();
  } else if (k % 2 != 0) {
    xf.assign(p.m * ldx, 0.0f);
    for (int i = 0; i < p.m; ++i) std::copy(p.x + int64_t{i} * k, p.x + int64_t{i + 1} * k, xf.data() + i * ldx);
    x = xf.data();
  }
  auto pack = [&p](int j0) { return PackRowMajorPanel<uint16_t>(p.w, j0); };
  if (dot) {
    RunPanels(p, kBf16DotTiles, pack, x, ldx);
  } else {
    RunPanels(p, kBf16ExactTiles, pack, x, ldx);
  }
}

void PanelGemmInt8(const LinearParams& p) {
  const TiledOperands x = PackInt8Activations(p, (p.w.cols + 63) / 64 * 64, /*flip=*/0x80);
  RunPanels(p, kInt8Tiles, [&p](int j0) { return PackRowMajorPanel<int8_t>(p.w, j0); }, x);
}

void PanelGemmInt4(const LinearParams& p) {
  const Int4X x = PackInt4GemmActivations(p);
  RunPanels(p, kInt4Tiles, [&p](int j0) { return PackInt4Panel(p.w, j0); }, x);
}

void AmxGemmBf16(const LinearParams& p) {
  const int64_t ldx = (p.w.cols + 31) / 32 * 32;
  const int rows = (p.m + kTileRows - 1) / kTileRows * kTileRows;
  thread_local std::vector<uint16_t> parts;
  parts.assign(3 * int64_t{rows} * ldx, 0);
  SplitRowsToBf16x3(p, ldx, rows, parts.data());
  const uint16_t* x = parts.data();  // this thread's buffer, for the pool's threads too
  RunAmxPanelGroups<uint16_t>(p, kTileRows, [&](const uint32_t* panel, int j0, int i0) {
    alignas(64) float sums[2][kTileRows][kPanelCols];
    AmxBf16Rows(p, panel, x, ldx, int64_t{rows} * ldx, j0, i0, sums);
  });
}

void AmxGemmInt8(const LinearParams& p) {
  const int rows = (p.m + 2 * kTileRows - 1) / (2 * kTileRows) * (2 * kTileRows);
  const TiledOperands x = PackInt8Activations(p, (p.w.cols + 63) / 64 * 64, /*flip=*/0, rows);
  RunAmxPanelGroups<int8_t>(p, 2 * kTileRows, [&](const uint32_t* panel, int j0, int i0) {
    alignas(64) int32_t sums[2 * kTileRows][kPanelCols];
    AmxInt8Rows(p, panel, x, j0, i0, sums);
  });
}

}  // namespace kvspan::kernels::internal
