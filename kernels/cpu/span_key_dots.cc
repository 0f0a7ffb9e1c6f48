// The AVX2 integer key dot products of span_attention_isa.h (the build's floor: no target
// attributes). int8 codes: per chunk of 16 channels the code bytes are widened to 16 bits
// and multiplied with the 16-bit query codes by vpmaddwd (each pair sum at most 2 * 255 *
// 127, exact in int32; vpmaddubsw could saturate: 2 * 255 * 127 > 2^15). int4 / int2 codes:
// per chunk of 32 channels the codes are unpacked into 32 bytes in channel order and
// multiplied with the int8 query codes by vpmaddubsw (pair sums at most 2 * 15 * 127, no
// saturation), then summed to int32 by vpmaddwd with ones.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/span_attention_isa.h"

namespace kvspan::kernels::internal {
namespace {

constexpr int kMaxRows = 2;  // rows per pass: 4 entries x 2 rows of accumulators, of 16 ymm

// Channels per chunk and the query codes' type.
template <int kBits>
constexpr int kChannelsOf = kBits == 8 ? 16 : 32;
template <int kBits>
using QueryCode = std::conditional_t<kBits == 8, int16_t, int8_t>;

// One chunk's codes (kChannelsOf<kBits> * kBits / 8 bytes at `src`) in channel order: 16
// codes widened to 16 bits (int8), or 32 bytes (int4, int2).
template <int kBits>
inline __m256i UnpackChunk(const uint8_t* src) {
  if constexpr (kBits == 8) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  } else if constexpr (kBits == 4) {
    // Byte i holds channels 2i (low nibble) and 2i + 1: interleave the two nibble vectors.
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(v, nibble), hi = _mm_and_si128(_mm_srli_epi16(v, 4), nibble);
    return _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
  } else {
    static_assert(kBits == 2);
    // Byte i (zero-extended into dword i) holds channels 4i .. 4i + 3: shifts by 6, 12 and
    // 18 move bit pairs 1, 2, 3 to the bottom of bytes 1, 2, 3 of the dword.
    const __m256i t = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    const __m256i spread = _mm256_or_si256(_mm256_or_si256(t, _mm256_slli_epi32(t, 6)),
                                           _mm256_or_si256(_mm256_slli_epi32(t, 12), _mm256_slli_epi32(t, 18)));
    return _mm256_and_si256(spread, _mm256_set1_epi8(0x03));
  }
}

// The 8 int32 partial sums of one chunk's products.
template <int kBits>
inline __m256i ChunkDot(__m256i codes, __m256i q) {
  if constexpr (kBits == 8) {
    return _mm256_madd_epi16(codes, q);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, q), _mm256_set1_epi16(1));
  }
}

// The four sums of a, b, c, d (8 lanes each) in one vector: three vphaddd and one add.
inline __m128i SumsOfFour(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// Rows [r0, r0 + kRows), four entries at a time (their code chunks unpacked once for all
// kRows rows), each entry's sums reduced in registers.
template <int kBits, int kRows>
void RowBlock(const IntKeyDotsParams& p, int chunks, const QueryCode<kBits>* qp, const int32_t* sums, int r0) {
  constexpr int kChannels = kChannelsOf<kBits>;
  constexpr int kChunkBytes = kChannels * kBits / 8;
  const int stride = chunks * kChannels;
  const int full_chunks = static_cast<int>(p.row_bytes / kChunkBytes);
  const int tail_bytes = static_cast<int>(p.row_bytes - int64_t{full_chunks} * kChunkBytes);
  const int32_t center = 1 << (kBits - 1);
  for (int e = 0; e < p.count; e += 4) {
    const int valid = std::min(4, p.count - e);
    __m256i acc[4][kRows];
    #pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      #pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[k][r] = _mm256_setzero_si256();
    for (int c = 0; c < chunks; ++c) {
      __m256i q[kRows];
      #pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        q[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + int64_t{r0 + r} * stride + c * kChannels));
      }
      #pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        if (k >= valid) break;
        const uint8_t* src = p.codes + (e + k) * p.row_bytes + c * kChunkBytes;
        __m256i codes;
        if (c < full_chunks) {
          codes = UnpackChunk<kBits>(src);
        } else {  // the row's last, partial chunk: never read past the row
          alignas(16) uint8_t tail[16] = {};
          std::memcpy(tail, src, tail_bytes);
          codes = UnpackChunk<kBits>(tail);
        }
        #pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) acc[k][r] = _mm256_add_epi32(acc[k][r], ChunkDot<kBits>(codes, q[r]));
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
void Rows(const IntKeyDotsParams& p, int chunks, const QueryCode<kBits>* qp, const int32_t* sums) {
  for (int r0 = 0; r0 < p.rows; r0 += kMaxRows) {
    if (p.rows - r0 >= 2) {
      RowBlock<kBits, 2>(p, chunks, qp, sums, r0);
    } else {
      RowBlock<kBits, 1>(p, chunks, qp, sums, r0);
    }
  }
}

}  // namespace

void IntKeyDotsAvx2(const IntKeyDotsParams& p) {
  // The driver's switch instantiates every width for both layouts; each runs its own.
  if (p.bits == 8) {
    RunIntKeyDots<kChannelsOf<8>, int16_t>(p, [&p](auto, int chunks, const int16_t* qp, const int32_t* sums) {
      Rows<8>(p, chunks, qp, sums);
    });
    return;
  }
  RunIntKeyDots<kChannelsOf<4>, int8_t>(p, [&p](auto bits, int chunks, const int8_t* qp, const int32_t* sums) {
    if constexpr (decltype(bits)::value != 8) Rows<decltype(bits)::value>(p, chunks, qp, sums);
  });
}

}  // namespace kvspan::kernels::internal
