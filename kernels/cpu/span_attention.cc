// Attention over compressed entry blocks and the dense window, as partial softmax states
// (kernels/span_attention.h). Key dequantization is fused into the dot products: for a key
// group g (G entries sharing per-channel (scale, zero)),
//   scale_attn * <q, zero + code * kscale> = qz + <qs, code>,
//   qz = scale_attn * sum_d q_d zero_{g,d},  qs_d = scale_attn * q_d kscale_{g,d}.
// SpanKeyDot::kFloat: each logit is one fp32 dot product of qs with the unpacked code row
// (one row at a time). kInt8Query: qs is quantized to int8 per (group, row) and <qs, code>
// becomes s_q * sum qhat (code - c) + c * sum qs, the sum exact in int32
// (span_attention_isa.h: AVX2 here in span_key_dots.cc, AVX-512 VNNI in
// span_attention_avx512.cc). Values (grouped per token) are decoded once per block into an
// L1-sized scratch (zero + code * scale), then every output row accumulates over the
// entries in registers (AVX-512 in span_attention_avx512.cc, AVX2 here). Shared blocks'
// per-entry key scales multiply the finished scaled dot product (logit = key_scale * scale *
// <q, k_hat> + log_count), value scales the weight of the value row (not the softmax sum).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/float16.h"
#include "kernels/cpu/span_attention_isa.h"
#include "kernels/cpu/vec.h"
#include "kernels/span_attention.h"
#include "kernels/weight_matrix.h"

namespace kvspan::kernels {
namespace {

// Work (rows * entries * head_dim multiply-adds) below which threads cost more than they save.
constexpr int64_t kMinParallelWork = int64_t{1} << 16;
constexpr int kKeyTile = 64;

bool IsQuantized(SpanCodec c) { return c == SpanCodec::kInt8 || c == SpanCodec::kInt4 || c == SpanCodec::kInt2; }

int64_t RowBytes(SpanCodec codec, int head_dim) {
  switch (codec) {
    case SpanCodec::kInt8: return head_dim;
    case SpanCodec::kInt4: return (int64_t{head_dim} + 1) / 2;
    case SpanCodec::kInt2: return (int64_t{head_dim} + 3) / 4;
    default: return int64_t{head_dim} * 2;
  }
}

#if defined(__AVX2__)
// Codes d .. d+7 of a row of kBits-bit codes (4 or 2; least significant bits first) as
// floats: the kBits source bytes, each repeated 8 / kBits times, shifted and masked.
template <int kBits>
inline __m256 UnpackEightCodes(const uint8_t* row, int d) {
  static_assert(kBits == 4 || kBits == 2);
  uint32_t word = 0;
  std::memcpy(&word, row + d * kBits / 8, kBits);  // 8 codes = kBits bytes
  const __m128i dup = kBits == 4 ? _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1)
                                 : _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i shifts = kBits == 4 ? _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4) : _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m256i bytes = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(word)), dup));
  const __m256i codes = _mm256_and_si256(_mm256_srlv_epi32(bytes, shifts), _mm256_set1_epi32((1 << kBits) - 1));
  return _mm256_cvtepi32_ps(codes);
}
#endif

// Unpacks one stored row into floats: the decoded value (bf16/fp16) or the raw code.
void UnpackRow(SpanCodec codec, const uint8_t* row, int hd, float* out) {
  switch (codec) {
    case SpanCodec::kBF16: {
      int d = 0;
#if defined(__AVX2__)
      for (; d + 8 <= hd; d += 8) {
        const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * d));
        _mm256_storeu_ps(out + d, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16)));
      }
#endif
      for (; d < hd; ++d) {
        const uint32_t bits = (uint32_t{row[2 * d]} | (uint32_t{row[2 * d + 1]} << 8)) << 16;
        std::memcpy(&out[d], &bits, sizeof(float));
      }
      return;
    }
    case SpanCodec::kFP16: {
      int d = 0;
#if defined(__F16C__) && defined(__AVX2__)
      // Exact for every finite fp16 (the codec stores finite values only).
      for (; d + 8 <= hd; d += 8) {
        _mm256_storeu_ps(out + d,
                         _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * d))));
      }
#endif
      for (; d < hd; ++d) out[d] = HalfToFloat(static_cast<uint16_t>(row[2 * d] | (row[2 * d + 1] << 8)));
      return;
    }
    case SpanCodec::kInt8: {
      int d = 0;
#if defined(__AVX2__)
      for (; d + 8 <= hd; d += 8) {
        const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + d));
        _mm256_storeu_ps(out + d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)));
      }
#endif
      for (; d < hd; ++d) out[d] = row[d];
      return;
    }
    case SpanCodec::kInt4: {
      int d = 0;
#if defined(__AVX2__)
      for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(out + d, UnpackEightCodes<4>(row, d));
#endif
      for (; d + 2 <= hd; d += 2) {
        out[d] = row[d >> 1] & 0xF;
        out[d + 1] = row[d >> 1] >> 4;
      }
      if (d < hd) out[d] = row[d >> 1] & 0xF;
      return;
    }
    case SpanCodec::kInt2: {
      int d = 0;
#if defined(__AVX2__)
      for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(out + d, UnpackEightCodes<2>(row, d));
#endif
      for (; d + 4 <= hd; d += 4) {
        const uint8_t byte = row[d >> 2];
        out[d] = byte & 0x3;
        out[d + 1] = (byte >> 2) & 0x3;
        out[d + 2] = (byte >> 4) & 0x3;
        out[d + 3] = byte >> 6;
      }
      for (; d < hd; ++d) out[d] = (row[d >> 2] >> ((d & 3) * 2)) & 0x3;
      return;
    }
  }
}

// x[i] = a * x[i] + c for i < n: dequantizes one value group in place.
inline void ScaleAddConst(float a, float c, float* x, int n) {
  int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 va = _mm256_set1_ps(a);
  const __m256 vc = _mm256_set1_ps(c);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), vc));
#endif
  for (; i < n; ++i) x[i] = a * x[i] + c;
}

// out[i] = fp16 bits in[i] as float, i < count (exact for every fp16 value).
void HalvesToFloats(const uint16_t* in, int64_t count, float* out) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX2__)
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
#endif
  for (; i < count; ++i) out[i] = HalfToFloat(in[i]);
}

#if defined(__AVX2__) && defined(__FMA__)
// The AVX2 decode of a quantized block's values in one pass when every group and the row
// are whole chunks of 8 channels (group_size % 8 == 0, head_dim % 8 == 0): per chunk the
// codes as floats times the group's scale plus its zero, one FMA (the arithmetic of
// ScaleAddConst). Returns false (nothing written) otherwise. vp: scratch of 2 * groups floats.
template <int kBits>
inline __m256 UnpackEightAny(const uint8_t* row, int d) {
  if constexpr (kBits == 8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + d))));
  } else {
    return UnpackEightCodes<kBits>(row, d);
  }
}

template <int kBits>
void DecodeQuantizedValuesOf(const SpanBlockView& b, float* vp, float* values) {
  const int hd = b.head_dim, gs = b.group_size, groups = hd / gs + (hd % gs != 0);
  const int64_t row_bytes = RowBytes(b.codec, hd);
  for (int e = 0; e < b.num_entries; ++e) {
    const uint8_t* row = b.value_data + e * row_bytes;
    float* v = values + static_cast<size_t>(e) * hd;
    HalvesToFloats(b.value_params + int64_t{e} * groups * 2, int64_t{groups} * 2, vp);
    for (int g = 0; g < groups; ++g) {
      const __m256 scale = _mm256_set1_ps(vp[2 * g]), zero = _mm256_set1_ps(vp[2 * g + 1]);
      for (int c = g * gs; c < std::min(hd, (g + 1) * gs); c += 8) {
        _mm256_storeu_ps(v + c, _mm256_fmadd_ps(scale, UnpackEightAny<kBits>(row, c), zero));
      }
    }
  }
}
#endif

bool DecodeQuantizedValuesAvx2(const SpanBlockView& b, float* vp, float* values) {
#if defined(__AVX2__) && defined(__FMA__)
  if (b.group_size % 8 != 0 || b.head_dim % 8 != 0) return false;
  switch (b.codec) {
    case SpanCodec::kInt8: DecodeQuantizedValuesOf<8>(b, vp, values); return true;
    case SpanCodec::kInt4: DecodeQuantizedValuesOf<4>(b, vp, values); return true;
    case SpanCodec::kInt2: DecodeQuantizedValuesOf<2>(b, vp, values); return true;
    default: return false;
  }
#else
  return false;
#endif
}

// One key group's channel parameters from their fp16 (scale, zero) pairs ([hd, 2]):
// kscale[d] = attn_scale * scale_d, kzero[d] = attn_scale * zero_d + center * kscale[d].
void GroupKeyParams(const uint16_t* pairs, int hd, float attn_scale, float center, float* kscale, float* kzero) {
  int d = 0;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
  const __m256 va = _mm256_set1_ps(attn_scale), vc = _mm256_set1_ps(center);
  for (; d + 8 <= hd; d += 8) {
    // Pairs d .. d+3 and d+4 .. d+7; even lanes scales, odd lanes zeros. The 64-bit lane
    // permutation puts the shuffles' (d, d+1, d+4, d+5 | d+2, d+3, d+6, d+7) in order.
    const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pairs + 2 * d)));
    const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pairs + 2 * d + 8)));
    const __m256 scales = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
    const __m256 zeros = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
    const __m256 ks = _mm256_mul_ps(va, scales);
    _mm256_storeu_ps(kscale + d, ks);
    _mm256_storeu_ps(kzero + d, _mm256_fmadd_ps(vc, ks, _mm256_mul_ps(va, zeros)));
  }
#endif
  for (; d < hd; ++d) {
    kscale[d] = attn_scale * HalfToFloat(pairs[2 * d]);
    kzero[d] = attn_scale * HalfToFloat(pairs[2 * d + 1]) + center * kscale[d];
  }
}

// Per-thread scratch, reused across calls (the kernels run on the pool's threads).
struct Scratch {
  std::vector<float> buf, logits, qs, qz, kparams, values, qscale;
  std::vector<int8_t> qcodes;
  std::vector<int32_t> dots;
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

int CodeBits(SpanCodec codec) { return codec == SpanCodec::kInt8 ? 8 : codec == SpanCodec::kInt4 ? 4 : 2; }

// SpanKeyDot::kInt8Query's logits of entries [g0, g1) (one key group) for `rows` rows:
// logits[r * n + e] = qz_r + s_q,r * sum_d qhat_r,d (code_e,d - c), where qs: [rows, hd]
// are the pre-scaled queries and qz_r = <q_r, kzero + c * kscale>.
void IntKeyLogits(const SpanAttentionParams& p, CpuIsa isa, int g0, int g1, int rows, const float* qz,
                  const float* qs, float* logits, Scratch& scratch) {
  const SpanBlockView& b = p.block;
  const int hd = b.head_dim;
  scratch.qcodes.resize(static_cast<size_t>(rows) * hd);
  scratch.qscale.resize(rows);
  scratch.dots.resize(static_cast<size_t>(rows) * (g1 - g0));
  for (int r = 0; r < rows; ++r) {
    scratch.qscale[r] = QuantizeRowInt8(qs + int64_t{r} * hd, hd, &scratch.qcodes[static_cast<size_t>(r) * hd]);
  }
  internal::IntKeyDotsParams kp;
  kp.row_bytes = RowBytes(b.codec, hd);
  kp.codes = b.key_data + g0 * kp.row_bytes;
  kp.count = g1 - g0;
  kp.bits = CodeBits(b.codec);
  kp.head_dim = hd;
  kp.q = scratch.qcodes.data();
  kp.rows = rows;
  kp.dots = scratch.dots.data();
  isa == CpuIsa::kAvx2 ? internal::IntKeyDotsAvx2(kp) : internal::IntKeyDotsAvx512(kp);
  const int n = b.num_entries;
  for (int r = 0; r < rows; ++r) {
    const float s_q = scratch.qscale[r];
    const int32_t* dots = &scratch.dots[static_cast<size_t>(r) * kp.count];
    float* lr = logits + int64_t{r} * n + g0;
    int e = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; e + 8 <= kp.count; e += 8) {
      const __m256 d = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dots + e)));
      _mm256_storeu_ps(lr + e, _mm256_fmadd_ps(_mm256_set1_ps(s_q), d, _mm256_set1_ps(qz[r])));
    }
#endif
    for (; e < kp.count; ++e) lr[e] = qz[r] + s_q * static_cast<float>(dots[e]);
  }
}

// The block's contribution to the rows of queries [j0, j1).
void SpanQueries(const SpanAttentionParams& p, CpuIsa isa, int j0, int j1) {
  const SpanBlockView& b = p.block;
  const int hd = b.head_dim;
  const int n = b.num_entries;
  const int rows = (j1 - j0) * p.group;
  const int64_t row_bytes = RowBytes(b.codec, hd);
  Scratch& scratch = ThreadScratch();
  std::vector<float>& buf = scratch.buf;
  std::vector<float>& logits = scratch.logits;
  buf.resize(hd);
  logits.resize(static_cast<size_t>(rows) * n);
  auto query = [&](int r) { return p.q + (j0 + r / p.group) * p.q_row_stride + int64_t{r % p.group} * hd; };

  if (!IsQuantized(b.codec)) {
    for (int e = 0; e < n; ++e) {
      UnpackRow(b.codec, b.key_data + e * row_bytes, hd, buf.data());
      for (int r = 0; r < rows; ++r) logits[r * n + e] = p.scale * internal::Dot(query(r), buf.data(), hd);
    }
  } else {
    const int gs = b.group_size;
    std::vector<float>& qs = scratch.qs;
    std::vector<float>& qz = scratch.qz;
    std::vector<float>& params = scratch.kparams;
    qs.resize(static_cast<size_t>(rows) * hd);
    qz.resize(rows);
    params.resize(int64_t{hd} * 4);
    float* kscale = params.data() + 2 * hd;  // [hd] channel scales of the group, times scale_attn
    float* kzero = kscale + hd;              // [hd] channel zeros of the group, times scale_attn
    // kInt8Query: the codes' midpoint c moves into the zeros, zero + code * s = (zero + c s)
    // + (code - c) s, so the integer sums run over centered codes.
    const float center = p.key_dot == SpanKeyDot::kInt8Query ? static_cast<float>(1 << (CodeBits(b.codec) - 1)) : 0.0f;
    for (int g0 = 0; g0 < n; g0 += gs) {
      GroupKeyParams(b.key_params + int64_t{g0 / gs} * hd * 2, hd, p.scale, center, kscale, kzero);
      const int g1 = std::min(n, g0 + gs);
      if (p.key_dot == SpanKeyDot::kInt8Query) {
        for (int r = 0; r < rows; ++r) {
          const float* q = query(r);
          internal::Multiply(q, kscale, &qs[r * hd], hd);
          qz[r] = internal::Dot(q, kzero, hd);
        }
        IntKeyLogits(p, isa, g0, g1, rows, qz.data(), qs.data(), logits.data(), scratch);
        continue;
      }
      for (int r = 0; r < rows; ++r) {
        const float* q = query(r);
        internal::Multiply(q, kscale, &qs[r * hd], hd);
        qz[r] = internal::Dot(q, kzero, hd);
      }
      for (int e = g0; e < g1; ++e) {
        UnpackRow(b.codec, b.key_data + e * row_bytes, hd, buf.data());
        for (int r = 0; r < rows; ++r) logits[r * n + e] = qz[r] + internal::Dot(&qs[r * hd], buf.data(), hd);
      }
    }
  }

  // Softmax bookkeeping: rescale each row's state to the new max, turn logits into weights.
  for (int r = 0; r < rows; ++r) {
    float* lr = &logits[r * n];
    // Sliding window: entries at positions <= `cutoff` are invisible to this row's query.
    const int64_t cutoff = p.window > 0 ? int64_t{p.first_query_position} + j0 + r / p.group - p.window
                                        : std::numeric_limits<int64_t>::min();
    if (b.key_scales != nullptr) internal::Multiply(lr, b.key_scales, lr, n);
    if (b.log_counts != nullptr) internal::AddInPlace(b.log_counts, lr, n);
    if (p.window > 0) {
      for (int e = 0; e < n; ++e) {
        if (b.positions[e] <= cutoff) lr[e] = -INFINITY;
      }
    }
    const float bmax = internal::MaxOf(lr, n);
    if (bmax == -INFINITY) {  // nothing visible: the row's state is unchanged
      std::fill(lr, lr + n, 0.0f);
      continue;
    }
    const int64_t sr = int64_t{j0} * p.group + r;
    float& m = p.state.m[sr];
    float& s = p.state.s[sr];
    const float new_m = std::max(m, bmax);
    const float c = s == 0.0f ? 0.0f : std::exp(m - new_m);
    const float sum = internal::ExpShiftedAndSum(lr, n, new_m);
    s = s * c + sum;
    m = new_m;
    internal::Scale(c, p.state.o + sr * hd, hd);
  }

  // Values: the block's rows decoded once into an L1-sized scratch (n x head_dim floats, at
  // most 64 x 128 x 4 = 32 KiB for a span of 64), then each output row accumulates over
  // the entries in registers (below), instead of a load/add/store of the output per entry.
  const int vgroups = IsQuantized(b.codec) ? (hd + b.group_size - 1) / b.group_size : 0;
  std::vector<float>& values = scratch.values;
  values.resize(static_cast<size_t>(n) * hd + static_cast<size_t>(vgroups) * 2);
  float* vp = values.data() + static_cast<size_t>(n) * hd;  // one entry's (scale, zero) pairs
  const bool avx512 = isa != CpuIsa::kAvx2;
  bool decoded = false;
  if (avx512) {
    internal::DecodeValuesAvx512(b, values.data());
    decoded = true;
  } else if (vgroups > 0) {
    decoded = DecodeQuantizedValuesAvx2(b, vp, values.data());
  }
  for (int e = 0; e < n && !decoded; ++e) {
    float* v = values.data() + static_cast<size_t>(e) * hd;
    UnpackRow(b.codec, b.value_data + e * row_bytes, hd, v);
    if (vgroups > 0) {
      HalvesToFloats(b.value_params + int64_t{e} * vgroups * 2, int64_t{vgroups} * 2, vp);
      for (int g = 0; g < vgroups; ++g) {
        const int c0 = g * b.group_size;
        const int c1 = std::min(hd, c0 + b.group_size);
        ScaleAddConst(vp[2 * g], vp[2 * g + 1], v + c0, c1 - c0);
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    // The softmax sum used the unscaled weight; the value scale multiplies the value only.
    float* w = &logits[r * n];
    if (b.value_scales != nullptr) {
      for (int e = 0; e < n; ++e) w[e] *= b.value_scales[e];
    }
    float* o = p.state.o + (int64_t{j0} * p.group + r) * hd;
    if (avx512) {
      internal::AccumulateValuesAvx512(w, values.data(), n, hd, o);
      continue;
    }
    int c = 0;
#if defined(__AVX2__) && defined(__FMA__)
    // 64 channels at a time: eight independent FMA chains (enough to cover the FMA latency
    // at two FMAs per cycle) share each broadcast weight.
    for (; c + 64 <= hd; c += 64) {
      __m256 acc[8];
      for (int k = 0; k < 8; ++k) acc[k] = _mm256_loadu_ps(o + c + 8 * k);
      const float* v = values.data() + c;
      for (int e = 0; e < n; ++e, v += hd) {
        const __m256 we = _mm256_set1_ps(w[e]);
        #pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(we, _mm256_loadu_ps(v + 8 * k), acc[k]);
      }
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(o + c + 8 * k, acc[k]);
    }
    // Then 32: four chains.
    for (; c + 32 <= hd; c += 32) {
      __m256 acc0 = _mm256_loadu_ps(o + c), acc1 = _mm256_loadu_ps(o + c + 8);
      __m256 acc2 = _mm256_loadu_ps(o + c + 16), acc3 = _mm256_loadu_ps(o + c + 24);
      const float* v = values.data() + c;
      for (int e = 0; e < n; ++e, v += hd) {
        const __m256 we = _mm256_set1_ps(w[e]);
        acc0 = _mm256_fmadd_ps(we, _mm256_loadu_ps(v), acc0);
        acc1 = _mm256_fmadd_ps(we, _mm256_loadu_ps(v + 8), acc1);
        acc2 = _mm256_fmadd_ps(we, _mm256_loadu_ps(v + 16), acc2);
        acc3 = _mm256_fmadd_ps(we, _mm256_loadu_ps(v + 24), acc3);
      }
      _mm256_storeu_ps(o + c, acc0);
      _mm256_storeu_ps(o + c + 8, acc1);
      _mm256_storeu_ps(o + c + 16, acc2);
      _mm256_storeu_ps(o + c + 24, acc3);
    }
    for (; c + 8 <= hd; c += 8) {
      __m256 acc = _mm256_loadu_ps(o + c);
      const float* v = values.data() + c;
      for (int e = 0; e < n; ++e, v += hd) acc = _mm256_fmadd_ps(_mm256_set1_ps(w[e]), _mm256_loadu_ps(v), acc);
      _mm256_storeu_ps(o + c, acc);
    }
#endif
    for (; c < hd; ++c) {
      float acc = o[c];
      for (int e = 0; e < n; ++e) acc += w[e] * values[static_cast<size_t>(e) * hd + c];
      o[c] = acc;
    }
  }
}

// Online softmax of one row over dense keys [0, last], merged into its state.
void DenseRow(const DensePartialParams& p, int j, int h) {
  const int hd = p.head_dim;
  const int last = p.q_start + j;
  const int first = p.window > 0 ? std::max(0, last - p.window + 1) : 0;
  const float* q = p.q + j * p.q_row_stride + int64_t{h} * hd;
  const int64_t r = int64_t{j} * p.group + h;
  float& m = p.state.m[r];
  float& s = p.state.s[r];
  float* o = p.state.o + r * hd;
  float scores[kKeyTile];
  for (int tile = first; tile <= last; tile += kKeyTile) {
    const int cnt = std::min(kKeyTile, last + 1 - tile);
    float tile_max = -INFINITY;
    for (int i = 0; i < cnt; ++i) {
      scores[i] = p.scale * internal::Dot(q, p.k + (tile + i) * p.k_token_stride, hd);
      tile_max = std::max(tile_max, scores[i]);
    }
    const float new_m = std::max(m, tile_max);
    const float c = s == 0.0f ? 0.0f : std::exp(m - new_m);
    s *= c;
    for (int i = 0; i < cnt; ++i) {
      const float w = std::exp(scores[i] - new_m);
      s += w;
      const float* v = p.v + (tile + i) * p.v_token_stride;
      if (i == 0) {
        internal::ScaleAndAxpy(c, w, v, o, hd);
      } else {
        internal::Axpy(w, v, o, hd);
      }
    }
    m = new_m;
  }
}

}  // namespace

void InitPartial(PartialState state, int num_rows, int head_dim) {
  std::fill(state.m, state.m + num_rows, -INFINITY);
  std::fill(state.s, state.s + num_rows, 0.0f);
  std::fill(state.o, state.o + int64_t{num_rows} * head_dim, 0.0f);
}

void MergePartial(const PartialState& from, PartialState into, int num_rows, int head_dim) {
  for (int r = 0; r < num_rows; ++r) {
    if (from.s[r] == 0.0f) continue;
    const float mx = std::max(from.m[r], into.m[r]);
    const float c_into = into.s[r] == 0.0f ? 0.0f : std::exp(into.m[r] - mx);
    const float c_from = std::exp(from.m[r] - mx);
    into.m[r] = mx;
    into.s[r] = into.s[r] * c_into + from.s[r] * c_from;
    float* o = into.o + int64_t{r} * head_dim;
    internal::ScaleAndAxpy(c_into, c_from, from.o + int64_t{r} * head_dim, o, head_dim);
  }
}

void FinishPartial(const PartialState& state, int num_q, int group, int head_dim, float* out,
                   int64_t out_row_stride) {
  for (int j = 0; j < num_q; ++j) {
    for (int h = 0; h < group; ++h) {
      const int64_t r = int64_t{j} * group + h;
      float* dst = out + j * out_row_stride + int64_t{h} * head_dim;
      const float inv = state.s[r] == 0.0f ? 0.0f : 1.0f / state.s[r];
      for (int d = 0; d < head_dim; ++d) dst[d] = state.o[r * head_dim + d] * inv;
    }
  }
}

void SpanAttention(const SpanAttentionParams& p, ThreadPool* pool) { SpanAttention(p, pool, SelectedCpuIsa().isa); }

void SpanAttention(const SpanAttentionParams& p, ThreadPool* pool, CpuIsa isa) {
  if (p.block.num_entries == 0) return;
  const int64_t work = int64_t{p.num_q} * p.group * p.block.num_entries * p.block.head_dim;
  if (pool == nullptr || p.num_q < 2 || work < kMinParallelWork) {
    SpanQueries(p, isa, 0, p.num_q);
    return;
  }
  const int chunks = std::min(p.num_q, 4 * pool->num_threads());
  pool->ParallelFor(chunks, [&p, isa, chunks](int64_t c) {
    const int j0 = static_cast<int>(c * p.num_q / chunks);
    const int j1 = static_cast<int>((c + 1) * p.num_q / chunks);
    if (j0 < j1) SpanQueries(p, isa, j0, j1);
  });
}

void DenseAttentionPartial(const DensePartialParams& p, ThreadPool* pool) {
  const int64_t rows = int64_t{p.num_q} * p.group;
  const int64_t work = rows * (p.q_start + p.num_q) * p.head_dim;
  auto task = [&p](int64_t r) { DenseRow(p, static_cast<int>(r / p.group), static_cast<int>(r % p.group)); };
  if (pool == nullptr || rows < 2 || work < kMinParallelWork) {
    for (int64_t r = 0; r < rows; ++r) task(r);
  } else {
    pool->ParallelFor(rows, task);
  }
}

}  // namespace kvspan::kernels
