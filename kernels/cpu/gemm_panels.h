// The panels of the prefill GEMMs (gemm_panels_avx512.cc on AVX-512, gemm_amx.cc on AMX
// tiles), private to kernels/: 32 rows of W repacked per call so that a panel's lanes are 32
// output columns, and the epilogue that writes a panel's columns of y. Only functions marked
// KVSPAN_AVX512 contain AVX-512 code (gemm_tiled.h).
#ifndef KVSPAN_KERNELS_CPU_GEMM_PANELS_H_
#define KVSPAN_KERNELS_CPU_GEMM_PANELS_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/gemm_tiled.h"

// GCC 12's _mm512_undefined_* (behind _mm512_castsi256_si512 and the masked shifts and
// conversions) read a variable on purpose uninitialized (avx512fintrin.h: `__m512i __Y =
// __Y;`) and warn at every use, in this header's functions and in both GEMM files.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace kvspan::kernels::internal {

constexpr int kPanelCols = 32;  // output columns (rows of W) per panel and task

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

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CPU_GEMM_PANELS_H_
