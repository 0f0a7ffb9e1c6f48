// The AVX-512 parts of span attention (span_attention_isa.h): the VNNI integer key dot
// products and the value pass. Only the functions marked
// KVSPAN_AVX512 contain AVX-512 code (function-level target attributes), so the binary still
// runs on an AVX2-only CPU, where SelectedCpuIsa() never picks them. Per chunk of 64
// channels (64, 32 or 16 code bytes, loaded under a mask so no byte past the row is read)
// the codes are unpacked into one zmm of 64 unsigned bytes in channel order and multiplied
// with the signed query codes by vpdpbusd (unsigned x signed bytes, exact int32 sums of 4
// products). Values: 16 channels per zmm, decoded with the fp16 (scale, zero) of their
// group by one FMA, and accumulated per output row in four independent FMA chains.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/float16.h"
#include "kernels/cpu/span_attention_isa.h"

// GCC 12's _mm512_undefined_* (behind _mm512_set1_*, casts and extracts) read a variable
// on purpose uninitialized (avx512fintrin.h: `__m512i __Y = __Y;`) and warn at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define KVSPAN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))

namespace kvspan::kernels::internal {
namespace {

constexpr int kChannels = 64;  // channels per vpdpbusd
constexpr int kMaxRows = 4;    // rows per pass: 4 entries x 4 rows of accumulators, of 32 zmm

// Chunk c of a row as 64 code bytes in channel order; `bytes` (<= 64 * kBits / 8) are in
// the row (a masked load reads no byte past them).
template <int kBits>
KVSPAN_AVX512 inline __m512i UnpackChunk(const uint8_t* src, int bytes) {
  if constexpr (kBits == 8) {
    return _mm512_maskz_loadu_epi8(bytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1, src);
  } else if constexpr (kBits == 4) {
    // Byte i, widened to word i, holds channels 2i (low nibble) and 2i + 1 (high nibble).
    const __m512i t = _mm512_cvtepu8_epi16(
        _mm256_maskz_loadu_epi8(bytes >= 32 ? ~__mmask32{0} : (__mmask32{1} << bytes) - 1, src));
    return _mm512_or_si512(_mm512_and_si512(t, _mm512_set1_epi16(0x000F)),
                           _mm512_and_si512(_mm512_slli_epi16(t, 4), _mm512_set1_epi16(0x0F00)));
  } else {
    static_assert(kBits == 2);
    // Byte i, widened to dword i, holds channels 4i .. 4i + 3: shifts by 6, 12 and 18 move
    // bit pairs 1, 2, 3 to the bottom of bytes 1, 2, 3 of the dword.
    const __m512i t = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << std::min(bytes, 16)) - 1), src));
    const __m512i spread = _mm512_or_si512(_mm512_or_si512(t, _mm512_slli_epi32(t, 6)),
                                           _mm512_or_si512(_mm512_slli_epi32(t, 12), _mm512_slli_epi32(t, 18)));
    return _mm512_and_si512(spread, _mm512_set1_epi8(0x03));
  }
}

// The four sums of a, b, c, d (16 lanes each) in one vector, in registers.
KVSPAN_AVX512 inline __m128i SumsOfFour(__m512i a, __m512i b, __m512i c, __m512i d) {
  // Per 128-bit lane: ab = [a0+a2, b0+b2, a1+a3, b1+b3], cd alike; then [a, b, c, d] sums.
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
}

// Rows [r0, r0 + kRows), four entries at a time (their code chunks unpacked once for all
// kRows rows), each entry's sums reduced in registers.
template <int kBits, int kRows>
KVSPAN_AVX512 void RowBlock(const IntKeyDotsParams& p, int chunks, const int8_t* qp, const int32_t* sums, int r0) {
  constexpr int kChunkBytes = kChannels * kBits / 8;
  const int stride = chunks * kChannels;
  const int32_t center = 1 << (kBits - 1);
  for (int e = 0; e < p.count; e += 4) {
    const int valid = std::min(4, p.count - e);
    __m512i acc[4][kRows];
    #pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      #pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[k][r] = _mm512_setzero_si512();
    for (int c = 0; c < chunks; ++c) {
      const int bytes = static_cast<int>(std::min<int64_t>(kChunkBytes, p.row_bytes - int64_t{c} * kChunkBytes));
      __m512i q[kRows];
      #pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) q[r] = _mm512_loadu_si512(qp + int64_t{r0 + r} * stride + c * kChannels);
      #pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        if (k >= valid) break;
        const __m512i codes = UnpackChunk<kBits>(p.codes + (e + k) * p.row_bytes + c * kChunkBytes, bytes);
        #pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) acc[k][r] = _mm512_dpbusd_epi32(acc[k][r], codes, q[r]);
      }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      const __m128i centered = _mm_sub_epi32(SumsOfFour(acc[0][r], acc[1][r], acc[2][r], acc[3][r]),
                                             _mm_set1_epi32(center * sums[r0 + r]));
      StoreSums(centered, valid, p.dots + int64_t{r0 + r} * p.count + e);
    }
  }
}

template <int kBits>
KVSPAN_AVX512 void Rows(const IntKeyDotsParams& p, int chunks, const int8_t* qp, const int32_t* sums) {
  for (int r0 = 0; r0 < p.rows; r0 += kMaxRows) {
    switch (std::min(kMaxRows, p.rows - r0)) {
      case 1: RowBlock<kBits, 1>(p, chunks, qp, sums, r0); break;
      case 2: RowBlock<kBits, 2>(p, chunks, qp, sums, r0); break;
      case 3: RowBlock<kBits, 3>(p, chunks, qp, sums, r0); break;
      default: RowBlock<kBits, 4>(p, chunks, qp, sums, r0); break;
    }
  }
}

KVSPAN_AVX512 inline __mmask16 Mask16(int count) {
  return count >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << count) - 1);
}

// Channels [c, c + 16) of a stored row as floats (the bf16/fp16 value or the raw code);
// lanes past `count` (< 16 at the row's end) are unspecified and no byte past the row is read.
KVSPAN_AVX512 __attribute__((always_inline)) inline __m512 UnpackSixteen(SpanCodec codec, const uint8_t* row, int c, int count) {
  switch (codec) {
    case SpanCodec::kBF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(Mask16(count), row + 2 * c)), 16));
    case SpanCodec::kFP16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(Mask16(count), row + 2 * c));
    case SpanCodec::kInt8:
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(Mask16(count), row + c)));
    case SpanCodec::kInt4: {
      const __m128i x = _mm_maskz_loadu_epi8(Mask16((count + 1) / 2), row + c / 2);
      const __m128i nibble = _mm_set1_epi8(0x0F);
      const __m128i codes = _mm_unpacklo_epi8(_mm_and_si128(x, nibble), _mm_and_si128(_mm_srli_epi16(x, 4), nibble));
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
    }
    case SpanCodec::kInt2: {
      const __m128i t = _mm_cvtepu8_epi32(_mm_maskz_loadu_epi8(Mask16((count + 3) / 4), row + c / 4));
      const __m128i spread = _mm_or_si128(_mm_or_si128(t, _mm_slli_epi32(t, 6)),
                                          _mm_or_si128(_mm_slli_epi32(t, 12), _mm_slli_epi32(t, 18)));
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(spread, _mm_set1_epi8(0x03))));
    }
  }
  return _mm512_setzero_ps();
}

template <SpanCodec kCodec>
KVSPAN_AVX512 void DecodeValuesOf(const SpanBlockView& b, float* values, float* params) {
  const int hd = b.head_dim;
  constexpr bool quantized = kCodec == SpanCodec::kInt8 || kCodec == SpanCodec::kInt4 || kCodec == SpanCodec::kInt2;
  constexpr int bits = kCodec == SpanCodec::kInt8 ? 8 : kCodec == SpanCodec::kInt4 ? 4 : kCodec == SpanCodec::kInt2 ? 2 : 16;
  const int64_t row_bytes = (int64_t{hd} * bits + 7) / 8;
  const int gs = b.group_size;
  const int vgroups = quantized ? (hd + gs - 1) / gs : 0;
  for (int e = 0; e < b.num_entries; ++e) {
    const uint8_t* row = b.value_data + e * row_bytes;
    float* v = values + int64_t{e} * hd;
    if (!quantized) {
      int c = 0;
      for (; c + 16 <= hd; c += 16) _mm512_storeu_ps(v + c, UnpackSixteen(kCodec, row, c, 16));
      if (c < hd) _mm512_mask_storeu_ps(v + c, Mask16(hd - c), UnpackSixteen(kCodec, row, c, hd - c));
      continue;
    }
    const uint16_t* halves = b.value_params + int64_t{e} * vgroups * 2;
    for (int i = 0; i < vgroups * 2; i += 16) {  // exact for every fp16
      _mm512_storeu_ps(&params[i], _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(Mask16(vgroups * 2 - i), halves + i)));
    }
    if (gs % 16 == 0) {  // each chunk of 16 channels lies in one group: decode in one pass
      int c = 0;
      for (int g = 0; g < vgroups; ++g) {
        const __m512 scale = _mm512_set1_ps(params[2 * g]), zero = _mm512_set1_ps(params[2 * g + 1]);
        const int c1 = std::min(hd, (g + 1) * gs);
        for (; c + 16 <= c1; c += 16) _mm512_storeu_ps(v + c, _mm512_fmadd_ps(scale, UnpackSixteen(kCodec, row, c, 16), zero));
        if (c < c1) {  // the row's last, partial chunk
          _mm512_mask_storeu_ps(v + c, Mask16(c1 - c), _mm512_fmadd_ps(scale, UnpackSixteen(kCodec, row, c, c1 - c), zero));
          c = c1;
        }
      }
      continue;
    }
    for (int c = 0; c < hd; c += 16) {
      const int count = std::min(16, hd - c);
      _mm512_mask_storeu_ps(v + c, Mask16(count), UnpackSixteen(kCodec, row, c, count));
    }
    for (int g = 0; g < vgroups; ++g) {
      const __m512 scale = _mm512_set1_ps(params[2 * g]), zero = _mm512_set1_ps(params[2 * g + 1]);
      const int c1 = std::min(hd, (g + 1) * gs);
      for (int c = g * gs; c < c1; c += 16) {
        const __mmask16 mask = Mask16(c1 - c);
        _mm512_mask_storeu_ps(v + c, mask, _mm512_fmadd_ps(scale, _mm512_maskz_loadu_ps(mask, v + c), zero));
      }
    }
  }
}

KVSPAN_AVX512 void DecodeValuesImpl(const SpanBlockView& b, float* values) {
  thread_local std::vector<float> params;  // one entry's (scale, zero) pairs, 16 floats of slack
  params.resize(static_cast<size_t>(b.head_dim) * 2 + 16);
  switch (b.codec) {
    case SpanCodec::kBF16: DecodeValuesOf<SpanCodec::kBF16>(b, values, params.data()); break;
    case SpanCodec::kFP16: DecodeValuesOf<SpanCodec::kFP16>(b, values, params.data()); break;
    case SpanCodec::kInt8: DecodeValuesOf<SpanCodec::kInt8>(b, values, params.data()); break;
    case SpanCodec::kInt4: DecodeValuesOf<SpanCodec::kInt4>(b, values, params.data()); break;
    case SpanCodec::kInt2: DecodeValuesOf<SpanCodec::kInt2>(b, values, params.data()); break;
  }
}

KVSPAN_AVX512 void AccumulateValuesImpl(const float* w, const float* values, int n, int hd, float* o) {
  int c = 0;
  // 64 channels at a time: four independent FMA chains share each broadcast weight.
  for (; c + 64 <= hd; c += 64) {
    __m512 acc0 = _mm512_loadu_ps(o + c), acc1 = _mm512_loadu_ps(o + c + 16);
    __m512 acc2 = _mm512_loadu_ps(o + c + 32), acc3 = _mm512_loadu_ps(o + c + 48);
    const float* v = values + c;
    for (int e = 0; e < n; ++e, v += hd) {
      const __m512 we = _mm512_set1_ps(w[e]);
      acc0 = _mm512_fmadd_ps(we, _mm512_loadu_ps(v), acc0);
      acc1 = _mm512_fmadd_ps(we, _mm512_loadu_ps(v + 16), acc1);
      acc2 = _mm512_fmadd_ps(we, _mm512_loadu_ps(v + 32), acc2);
      acc3 = _mm512_fmadd_ps(we, _mm512_loadu_ps(v + 48), acc3);
    }
    _mm512_storeu_ps(o + c, acc0);
    _mm512_storeu_ps(o + c + 16, acc1);
    _mm512_storeu_ps(o + c + 32, acc2);
    _mm512_storeu_ps(o + c + 48, acc3);
  }
  for (; c < hd; c += 16) {
    const __mmask16 mask = Mask16(hd - c);
    __m512 acc = _mm512_maskz_loadu_ps(mask, o + c);
    const float* v = values + c;
    for (int e = 0; e < n; ++e, v += hd) acc = _mm512_fmadd_ps(_mm512_set1_ps(w[e]), _mm512_maskz_loadu_ps(mask, v), acc);
    _mm512_mask_storeu_ps(o + c, mask, acc);
  }
}

}  // namespace

void DecodeValuesAvx512(const SpanBlockView& b, float* values) {
  DecodeValuesImpl(b, values);
}

void AccumulateValuesAvx512(const float* w, const float* values, int num_entries, int head_dim, float* o) {
  AccumulateValuesImpl(w, values, num_entries, head_dim, o);
}

void IntKeyDotsAvx512(const IntKeyDotsParams& p) {
  RunIntKeyDots<kChannels, int8_t>(p, [&p](auto bits, int chunks, const int8_t* qp, const int32_t* sums) {
    Rows<decltype(bits)::value>(p, chunks, qp, sums);
  });
}

}  // namespace kvspan::kernels::internal
