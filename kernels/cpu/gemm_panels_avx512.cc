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
//   int4  the nibbles unpacked to codes + 8 as bytes in quads (the 16-row panels' units hold
//         them a lane per row already: two masks, no transpose), the group scales as fp32
//         ([num_groups][32]); per 32 columns of a row of x, vpdpbusd of the codes with x's
//         quads (PackInt8Activations' signed q) from -8 · Σ q of those 32 (so the integer sum
//         is Σ q · code exactly), then one conversion and one FMA with the 32 rows' scales of
//         the group (the decode tiles convert once per group: the same sums at group 32).
//         6 rows of x (each has an integer and an fp32 accumulator per output vector).
// Measured (linear_bench, m = 512): docs/performance.md, "The prefill GEMM". Like
// gemm_tiled_avx512.cc, only functions marked KVSPAN_AVX512 contain AVX-512 code.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/float16.h"
#include "kernels/cpu/gemm_panels.h"
#include "kernels/cpu/gemm_tiled.h"


namespace kvspan::kernels::internal {
namespace {

// NOTE: every loop over a tile's rows of x (MR) is unrolled by pragma: GCC keeps the
// accumulator arrays in memory otherwise.

// acc + vpdpbusd(u8, s8), in asm: GCC 12 copies the accumulators of the intrinsic between
// registers at every step of the tiles' loops (a register move per vpdpbusd).
KVSPAN_AVX512_INLINE __m512i DotBytes(__m512i acc, __m512i u8, __m512i s8) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
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
// uint32; lane l of quad c4 = W row j0 + l's codes + 8 of columns 4 c4 .. 4 c4 + 3) and the
// group scales as fp32 ([num_groups][32]). The 32 rows are two of weight_matrix.h's 16-row
// panels, whose units already hold a lane per row: unit u's low nibbles are quad 2u, its high
// nibbles quad 2u + 1. Rows past the padded panels read as code 0 - 8 and rows past w.rows
// get scale 0: their outputs, which are not stored, are finite.
struct Int4Panel {
  const uint32_t* codes;
  const float* scales;
};

KVSPAN_AVX512 Int4Panel PackInt4Panel(const WeightMatrix& w, int j0) {
  thread_local std::vector<uint32_t> codes;
  thread_local std::vector<float> scales;
  const int units = (w.cols + 63) / 64 * 8, num_groups = w.num_groups();
  codes.resize(int64_t{units} * 2 * kPanelCols);
  scales.resize(int64_t{num_groups} * kPanelCols);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  for (int half = 0; half < kPanelCols / kInt4PanelRows; ++half) {
    const int row = j0 + half * kInt4PanelRows;
    uint32_t* out = codes.data() + half * kInt4PanelRows;
    if (row >= Int4PaddedRows(w.rows)) {
      for (int q = 0; q < 2 * units; ++q) std::fill_n(out + q * kPanelCols, kInt4PanelRows, 0u);
      continue;
    }
    const uint8_t* panel = base + Int4CodeOffset(w.cols, row, 0);
    for (int u = 0; u < units; ++u) {
      const __m512i v = _mm512_loadu_si512(panel + int64_t{u} * 64);
      _mm512_storeu_si512(out + (2 * u) * kPanelCols, _mm512_and_si512(v, nibble));
      _mm512_storeu_si512(out + (2 * u + 1) * kPanelCols, _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble));
    }
  }
  for (int g = 0; g < num_groups; ++g) {
    for (int c = 0; c < kPanelCols; ++c) {
      const int row = j0 + c;
      scales[g * kPanelCols + c] = row < w.rows ? HalfToFloat(w.group_scales[Int4ScaleIndex(num_groups, row, g)]) : 0.0f;
    }
  }
  return {codes.data(), scales.data()};
}

// x: PackInt4Activations' q and -8 · Σ q per 32 columns.
template <int MR>
struct Int4Tile {
  KVSPAN_AVX512 static void Run(const LinearParams& p, const Int4Panel& panel, const TiledOperands& x, int j0, int i0) {
    const int group_size = p.w.group_size;
    const int subgroups = static_cast<int>(x.ldx / 32);
    const int8_t* xq = static_cast<const int8_t*>(x.x) + int64_t{i0} * x.ldx;
    const int32_t* xs = x.x_sums + int64_t{i0} * subgroups;
    __m512 acc[MR][2];
    #pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int sg = 0; sg < subgroups; ++sg) {
      __m512i dot[MR][2];
      #pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) dot[i][0] = dot[i][1] = _mm512_set1_epi32(xs[i * subgroups + sg]);
      const uint32_t* wq = panel.codes + sg * 8 * kPanelCols;
      #pragma GCC unroll 2
      for (int quad = 0; quad < 8; ++quad) {
        const __m512i w0 = _mm512_loadu_si512(wq + quad * kPanelCols);
        const __m512i w1 = _mm512_loadu_si512(wq + quad * kPanelCols + 16);
        #pragma GCC unroll 6
        for (int i = 0; i < MR; ++i) {
          int32_t four;
          std::memcpy(&four, xq + i * x.ldx + sg * 32 + quad * 4, sizeof(four));
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
      const __m512 s_x = _mm512_set1_ps(x.x_scales[i0 + i]);
      StoreColumns(p, c, i0 + i, j0, _mm512_fmadd_ps(acc[i][0], s_x, c.bias0), _mm512_fmadd_ps(acc[i][1], s_x, c.bias1));
    }
  }
};
constexpr RowTiles<Int4Tile, kInt4MaxRows> kInt4Tiles;

// ---- int8 ------------------------------------------------------------------------------

constexpr int kInt8MaxRows = 12;

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
  const TiledOperands x = PackInt4Activations(p);
  RunPanels(p, kInt4Tiles, [&p](int j0) { return PackInt4Panel(p.w, j0); }, x);
}

}  // namespace kvspan::kernels::internal
