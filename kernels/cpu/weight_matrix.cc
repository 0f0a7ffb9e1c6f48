#include "kernels/weight_matrix.h"

#include <algorithm>
#include <cmath>

#include "common/float16.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kvspan::kernels {

absl::string_view WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kF16:
      return "f16";
    case WeightFormat::kInt8:
      return "int8";
  }
  return "unknown";
}

int WeightElementBytes(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return 4;
    case WeightFormat::kBF16:
    case WeightFormat::kF16:
      return 2;
    case WeightFormat::kInt8:
      return 1;
  }
  return 0;
}

int64_t WeightMatrix::size_bytes() const {
  int64_t bytes = int64_t{rows} * cols * WeightElementBytes(format);
  if (format == WeightFormat::kInt8) bytes += int64_t{rows} * (sizeof(float) + sizeof(int32_t));
  return bytes;
}

void DequantizeRow(const WeightMatrix& w, int row, float* out) {
  const int64_t offset = int64_t{row} * w.cols;
  switch (w.format) {
    case WeightFormat::kF32:
      std::copy_n(static_cast<const float*>(w.data) + offset, w.cols, out);
      return;
    case WeightFormat::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + offset;
      for (int c = 0; c < w.cols; ++c) out[c] = Bf16ToFloat(src[c]);
      return;
    }
    case WeightFormat::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + offset;
      for (int c = 0; c < w.cols; ++c) out[c] = HalfToFloat(src[c]);
      return;
    }
    case WeightFormat::kInt8: {
      const int8_t* src = static_cast<const int8_t*>(w.data) + offset;
      const float scale = w.scales[row];
      for (int c = 0; c < w.cols; ++c) out[c] = scale * static_cast<float>(src[c]);
      return;
    }
  }
}

float QuantizeRowInt8(const float* x, int k, int8_t* q) {
  float max_abs = 0.0f;
  for (int c = 0; c < k; ++c) max_abs = std::max(max_abs, std::abs(x[c]));
  const float inv = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
  int c = 0;
#if defined(__AVX2__)
  // The same arithmetic as the scalar loop: an fp32 product, rounded half to even.
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; c + 8 <= k; c += 8) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c), vinv),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 clamped = _mm256_max_ps(_mm256_min_ps(r, _mm256_set1_ps(127.0f)), _mm256_set1_ps(-127.0f));
    alignas(32) int32_t codes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(codes), _mm256_cvtps_epi32(clamped));
    for (int l = 0; l < 8; ++l) q[c + l] = static_cast<int8_t>(codes[l]);
  }
#endif
  // nearbyint rounds half to even in the default mode; the clamp only guards the rounding
  // of values at ±max_abs.
  for (; c < k; ++c) q[c] = static_cast<int8_t>(std::clamp(std::nearbyint(x[c] * inv), -127.0f, 127.0f));
  return max_abs / 127.0f;
}

void QuantizeRowsInt8(const float* w, int64_t row_begin, int64_t row_end, int cols, int8_t* codes,
                      float* scales, int32_t* row_sums) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    int8_t* dst = codes + r * cols;
    scales[r] = QuantizeRowInt8(w + r * cols, cols, dst);
    int32_t sum = 0;
    for (int c = 0; c < cols; ++c) sum += dst[c];
    row_sums[r] = sum;
  }
}

}  // namespace kvspan::kernels
