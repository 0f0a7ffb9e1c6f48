// Double-precision plain-loop references for attention over compressed spans and over the
// dense window, as partial softmax states: the specification the fast paths are tested
// against. Dequantization here is written from the stored layout (docs/span-format.md);
// kernels/span_attention_test.cc checks it against kvcache::DecodeBlockKeys/Values.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/float16.h"
#include "kernels/span_attention.h"
#include "kernels/weight_matrix.h"

namespace kvspan::kernels {
namespace {

int64_t RowBytes(SpanCodec codec, int head_dim) { return (int64_t{head_dim} * SpanCodecBits(codec) + 7) / 8; }

// The stored code of (row e, channel d): a 16-bit pattern or an unsigned B-bit integer.
uint32_t Code(const uint8_t* data, SpanCodec codec, int head_dim, int e, int d) {
  const uint8_t* row = data + e * RowBytes(codec, head_dim);
  const int bits = SpanCodecBits(codec);
  if (bits == 16) return row[2 * d] | (uint32_t{row[2 * d + 1]} << 8);
  const int bit = d * bits;
  return (row[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

// Dequantized key (is_key) or value of entry e, channel d, exactly as the format defines:
// zero + q * scale evaluated in fp32 from fp16 scale/zero.
float Dequantize(const SpanBlockView& b, bool is_key, int e, int d) {
  const uint8_t* data = is_key ? b.key_data : b.value_data;
  const uint32_t code = Code(data, b.codec, b.head_dim, e, d);
  if (b.codec == SpanCodec::kBF16) return Bf16ToFloat(static_cast<uint16_t>(code));
  if (b.codec == SpanCodec::kFP16) return HalfToFloat(static_cast<uint16_t>(code));
  int64_t param;
  if (is_key) {
    param = (int64_t{e / b.group_size} * b.head_dim + d) * 2;  // [ceil(n/G), D, 2]
  } else {
    const int groups = (b.head_dim + b.group_size - 1) / b.group_size;
    param = (int64_t{e} * groups + d / b.group_size) * 2;  // [n, ceil(D/G), 2]
  }
  const uint16_t* params = is_key ? b.key_params : b.value_params;
  const float scale = HalfToFloat(params[param]);
  const float zero = HalfToFloat(params[param + 1]);
  const float product = static_cast<float>(code) * scale;
  return zero + product;
}

// SpanKeyDot::kInt8Query's key dot products of one row: dot[e] = the row's logit of entry e
// before key_scale and log_count, with the pre-scaled query of each key group quantized as
// the header specifies (qs in fp32 exactly as stated there; all sums in double).
void Int8QueryDots(const SpanBlockView& b, const float* q, float scale, std::vector<double>* dots) {
  const int hd = b.head_dim;
  const int bits = SpanCodecBits(b.codec);
  const double center = 1 << (bits - 1);
  std::vector<float> qs(hd);
  std::vector<int8_t> qhat(hd);
  for (int g0 = 0; g0 < b.num_entries; g0 += b.group_size) {
    const uint16_t* params = b.key_params + int64_t{g0 / b.group_size} * hd * 2;  // [D, 2] (scale, zero)
    double zero_dot = 0.0, qs_sum = 0.0;
    for (int d = 0; d < hd; ++d) {
      qs[d] = q[d] * (scale * HalfToFloat(params[2 * d]));
      zero_dot += double{q[d]} * scale * HalfToFloat(params[2 * d + 1]);
      qs_sum += qs[d];
    }
    const double s_q = QuantizeRowInt8(qs.data(), hd, qhat.data());
    for (int e = g0; e < std::min(b.num_entries, g0 + b.group_size); ++e) {
      double codes_dot = 0.0;
      for (int d = 0; d < hd; ++d) codes_dot += qhat[d] * (Code(b.key_data, b.codec, hd, e, d) - center);
      (*dots)[e] = zero_dot + center * qs_sum + s_q * codes_dot;
    }
  }
}

// Merges one row's double-precision partial (m2, s2, o2) into a float state row.
void MergeRow(double m2, double s2, const std::vector<double>& o2, float* m, float* s, float* o,
              int head_dim) {
  if (s2 == 0.0) return;
  const double m1 = *m;
  const double mx = std::max(m1, m2);
  const double c1 = *s == 0.0f ? 0.0 : std::exp(m1 - mx);
  const double c2 = std::exp(m2 - mx);
  *m = static_cast<float>(mx);
  *s = static_cast<float>(*s * c1 + s2 * c2);
  for (int d = 0; d < head_dim; ++d) o[d] = static_cast<float>(o[d] * c1 + o2[d] * c2);
}

}  // namespace

void SpanAttentionRef(const SpanAttentionParams& p) {
  const SpanBlockView& b = p.block;
  const int hd = b.head_dim;
  const int n = b.num_entries;
  if (n == 0) return;
  std::vector<double> logits(n), int8_query_dots(n);
  std::vector<double> o(hd);
  const bool int8_query = p.key_dot == SpanKeyDot::kInt8Query && SpanCodecBits(b.codec) < 16;
  for (int j = 0; j < p.num_q; ++j) {
    for (int h = 0; h < p.group; ++h) {
      const float* q = p.q + j * p.q_row_stride + int64_t{h} * hd;
      if (int8_query) Int8QueryDots(b, q, p.scale, &int8_query_dots);
      // Entries outside the sliding window take no part (logit -inf, weight 0).
      auto visible = [&](int e) {
        return p.window <= 0 || int64_t{b.positions[e]} > int64_t{p.first_query_position} + j - p.window;
      };
      double mx = -std::numeric_limits<double>::infinity();
      for (int e = 0; e < n; ++e) {
        if (!visible(e)) {
          logits[e] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double dot = 0.0;  // scale * <q, k_hat_e>
        if (int8_query) {
          dot = int8_query_dots[e];
        } else {
          for (int d = 0; d < hd; ++d) dot += double{q[d]} * Dequantize(b, true, e, d);
          dot *= p.scale;
        }
        const double key_scale = b.key_scales == nullptr ? 1.0 : b.key_scales[e];
        logits[e] = key_scale * dot + (b.log_counts == nullptr ? 0.0 : b.log_counts[e]);
        mx = std::max(mx, logits[e]);
      }
      double sum = 0.0;
      std::fill(o.begin(), o.end(), 0.0);
      for (int e = 0; e < n && mx > -std::numeric_limits<double>::infinity(); ++e) {
        if (!visible(e)) continue;
        const double w = std::exp(logits[e] - mx);
        sum += w;
        const double wv = w * (b.value_scales == nullptr ? 1.0 : b.value_scales[e]);
        for (int d = 0; d < hd; ++d) o[d] += wv * Dequantize(b, false, e, d);
      }
      const int64_t r = int64_t{j} * p.group + h;
      MergeRow(mx, sum, o, &p.state.m[r], &p.state.s[r], p.state.o + r * hd, hd);
    }
  }
}

void DenseAttentionPartialRef(const DensePartialParams& p) {
  const int hd = p.head_dim;
  std::vector<double> logits(p.num_keys);
  std::vector<double> o(hd);
  for (int j = 0; j < p.num_q; ++j) {
    const int last = p.q_start + j;
    const int first = p.window > 0 ? std::max(0, last - p.window + 1) : 0;
    for (int h = 0; h < p.group; ++h) {
      const float* q = p.q + j * p.q_row_stride + int64_t{h} * hd;
      double mx = -std::numeric_limits<double>::infinity();
      for (int t = first; t <= last; ++t) {
        double dot = 0.0;
        for (int d = 0; d < hd; ++d) dot += double{q[d]} * p.k[t * p.k_token_stride + d];
        logits[t] = p.scale * dot;
        mx = std::max(mx, logits[t]);
      }
      double sum = 0.0;
      std::fill(o.begin(), o.end(), 0.0);
      for (int t = first; t <= last; ++t) {
        const double w = std::exp(logits[t] - mx);
        sum += w;
        for (int d = 0; d < hd; ++d) o[d] += w * p.v[t * p.v_token_stride + d];
      }
      const int64_t r = int64_t{j} * p.group + h;
      MergeRow(mx, sum, o, &p.state.m[r], &p.state.s[r], p.state.o + r * hd, hd);
    }
  }
}

}  // namespace kvspan::kernels
