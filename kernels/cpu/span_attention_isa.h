// The ISA-specific parts of span attention (span_attention.h), private to kernels/.
// - Integer key dot products of SpanKeyDot::kInt8Query: the int8 query codes of several rows
//   against the B-bit key codes of one key group, as exact int32 sums. span_key_dots.cc
//   (AVX2, the build's floor): vpmaddubsw for int4/int2, vpmaddwd on 16-bit widened codes
//   for int8; span_attention_avx512.cc: AVX-512 VNNI vpdpbusd. Both unpack each code row,
//   in channel order, once for all rows and return the same sums.
// - The AVX-512 value pass (span_attention_avx512.cc): a block's values decoded into floats
//   and the weighted sums of its rows, the same arithmetic per channel as the AVX2 code of
//   span_attention.cc (one FMA per product, in entry order), so both give the same bits.
// span_attention_avx512.cc's functions carry function-level target attributes: callers
// reach them only when SelectedCpuIsa() (or a test) picked AVX-512.
#ifndef KVSPAN_KERNELS_CPU_SPAN_ATTENTION_ISA_H_
#define KVSPAN_KERNELS_CPU_SPAN_ATTENTION_ISA_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/span_attention.h"

namespace kvspan::kernels::internal {

struct IntKeyDotsParams {
  // [count, row_bytes]: code of (entry e, channel d) at bit (d*B) % 8 of byte (d*B) / 8 of
  // row e, least significant bits first (the SpanBlockView layout).
  const uint8_t* codes = nullptr;
  int64_t row_bytes = 0;  // ceil(head_dim * bits / 8)
  int count = 0;          // entries, >= 1
  int bits = 8;           // B: 8, 4 or 2
  int head_dim = 0;       // >= 1
  const int8_t* q = nullptr;  // [rows, head_dim] query codes
  int rows = 0;               // >= 1
  // [rows, count] out: sum_d q[r, d] * (code(e, d) - c), c = 2^(bits - 1) the codes'
  // midpoint (exact int32).
  int32_t* dots = nullptr;
};

// The same sums by either ISA. REQUIRES: the CPU supports it; no overflow (|sum| <= 255 *
// 127 * head_dim < 2^31).
void IntKeyDotsAvx2(const IntKeyDotsParams& p);
void IntKeyDotsAvx512(const IntKeyDotsParams& p);

// values[e * head_dim + d] = the decoded value (zero + code * scale, or the bf16/fp16
// value) of entry e, channel d, for e < b.num_entries (AVX-512).
void DecodeValuesAvx512(const SpanBlockView& b, float* values);

// o[d] += sum_e w[e] * values[e * head_dim + d] for d < head_dim, e in order (AVX-512).
void AccumulateValuesAvx512(const float* w, const float* values, int num_entries, int head_dim, float* o);

// dots[0, valid) = the first `valid` (1..4) lanes of `sums`.
inline void StoreSums(__m128i sums, int valid, int32_t* dots) {
  if (valid == 4) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dots), sums);
    return;
  }
  alignas(16) int32_t lanes[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), sums);
  for (int k = 0; k < valid; ++k) dots[k] = lanes[k];
}

// sum_i q[i] for i < n.
inline int32_t SumOfCodes(const int8_t* q, int n) {
  int i = 0;
  int32_t sum = 0;
  // vpsadbw sums unsigned bytes: q XOR 0x80 is q + 128 as unsigned.
  __m256i acc = _mm256_setzero_si256();
  for (; i + 32 <= n; i += 32) {
    const __m256i u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i)), _mm256_set1_epi8(-128));
    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(u, _mm256_setzero_si256()));
  }
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  sum = static_cast<int32_t>(lanes[0] + lanes[1] + lanes[2] + lanes[3]) - 128 * i;
  for (; i < n; ++i) sum += q[i];
  return sum;
}

// The query codes of every row zero-padded to `stride` >= head_dim elements (out: [rows,
// stride]), as both kernels multiply them with code rows unpacked in channel order (so
// padding channels, whatever their code bits, add nothing). Returns sums[r] = sum_d q[r, d].
template <typename T>
void PadQueryCodes(const IntKeyDotsParams& p, int stride, T* out, int32_t* sums) {
  const int hd = p.head_dim;
  for (int r = 0; r < p.rows; ++r) {
    const int8_t* q = p.q + int64_t{r} * hd;
    T* dst = out + int64_t{r} * stride;
    int d = 0;
    if constexpr (sizeof(T) == 1) {
      std::memcpy(dst, q, hd);
      d = hd;
    } else {
      for (; d + 16 <= hd; d += 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d),
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + d))));
      }
    }
    for (; d < hd; ++d) dst[d] = q[d];
    for (; d < stride; ++d) dst[d] = 0;
    sums[r] = SumOfCodes(q, hd);
  }
}

// The driver of both ISAs' IntKeyDots: pads each row's query codes (as T) to whole chunks
// of kChannels in thread-local storage, then calls run_rows(std::integral_constant<int,
// bits>, chunks, padded codes, sums).
template <int kChannels, typename T, typename RunRows>
void RunIntKeyDots(const IntKeyDotsParams& p, RunRows run_rows) {
  const int chunks = (p.head_dim + kChannels - 1) / kChannels;
  thread_local std::vector<T> qp;
  thread_local std::vector<int32_t> sums;
  qp.resize(static_cast<size_t>(p.rows) * chunks * kChannels);
  sums.resize(p.rows);
  PadQueryCodes(p, chunks * kChannels, qp.data(), sums.data());
  switch (p.bits) {
    case 8: run_rows(std::integral_constant<int, 8>{}, chunks, qp.data(), sums.data()); break;
    case 4: run_rows(std::integral_constant<int, 4>{}, chunks, qp.data(), sums.data()); break;
    default: run_rows(std::integral_constant<int, 2>{}, chunks, qp.data(), sums.data()); break;
  }
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CPU_SPAN_ATTENTION_ISA_H_
