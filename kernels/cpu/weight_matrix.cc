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
    case WeightFormat::kInt4:
      return "int4";
  }
  return "unknown";
}

int64_t WeightRowBytes(WeightFormat format, int64_t cols) {
  switch (format) {
    case WeightFormat::kF32:
      return cols * 4;
    case WeightFormat::kBF16:
    case WeightFormat::kF16:
      return cols * 2;
    case WeightFormat::kInt8:
      return cols;
    case WeightFormat::kInt4:
      return (cols + 63) / 64 * 32;
  }
  return 0;
}

int64_t WeightDataBytes(WeightFormat format, int64_t rows, int64_t cols) {
  if (format == WeightFormat::kInt4) rows = Int4PaddedRows(rows);
  return rows * WeightRowBytes(format, cols);
}

int64_t WeightMatrix::size_bytes() const {
  int64_t bytes = WeightDataBytes(format, rows, cols);
  if (format == WeightFormat::kInt8) bytes += int64_t{rows} * (sizeof(float) + sizeof(int32_t));
  // Scales of whole panels, like the codes.
  if (format == WeightFormat::kInt4) bytes += Int4PaddedRows(rows) * num_groups() * sizeof(uint16_t);
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
    case WeightFormat::kInt4:
      for (int c = 0; c < w.cols; ++c) {
        const float scale = HalfToFloat(w.group_scales[Int4ScaleIndex(w.num_groups(), row, c / w.group_size)]);
        out[c] = scale * static_cast<float>(Int4Code(w, row, c));
      }
      return;
  }
}

float QuantizeRowInt8(const float* x, int k, int8_t* q) {
  float max_abs = 0.0f;
  int c = 0;
#if defined(__AVX2__)
  // The maximum is exact in any order (x finite).
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  for (; c + 8 <= k; c += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + c), abs_mask));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float lane : lanes) max_abs = std::max(max_abs, lane);
#endif
  for (; c < k; ++c) max_abs = std::max(max_abs, std::abs(x[c]));
  const float inv = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
  c = 0;
#if defined(__AVX2__)
  // The same arithmetic as the scalar loop: an fp32 product, rounded half to even; the
  // clamped codes fit int16 and int8, so the saturating packs keep them unchanged.
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; c + 8 <= k; c += 8) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c), vinv),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 clamped = _mm256_max_ps(_mm256_min_ps(r, _mm256_set1_ps(127.0f)), _mm256_set1_ps(-127.0f));
    const __m256i codes = _mm256_cvtps_epi32(clamped);
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + c), _mm_packs_epi16(words, words));
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

void QuantizeRowsInt4(const float* w, int64_t num_rows, int cols, int group_size, int64_t first_row,
                      uint8_t* codes, uint16_t* scales) {
  const int num_groups = (cols + group_size - 1) / group_size;
  const int padded_cols = (cols + 63) / 64 * 64;
  for (int64_t i = 0; i < num_rows; ++i) {
    const float* src = w + i * cols;
    const int64_t r = first_row + i;
    // Code 0 in both nibbles, past cols too; a row's 4 bytes per unit are contiguous.
    for (int c = 0; c < padded_cols; c += 8) std::fill_n(codes + Int4CodeOffset(cols, r, c), 4, uint8_t{0x88});
    for (int g = 0; g < num_groups; ++g) {
      const int begin = g * group_size, end = std::min(cols, begin + group_size);
      float max_abs = 0.0f;
      for (int c = begin; c < end; ++c) max_abs = std::max(max_abs, std::abs(src[c]));
      const uint16_t scale_bits = FloatToHalf(max_abs / 7.0f);
      scales[Int4ScaleIndex(num_groups, r, g)] = scale_bits;
      const float scale = HalfToFloat(scale_bits);
      if (scale == 0.0f) continue;
      // Codes from the stored (fp16-rounded) scale, so that the clamp only guards values at
      // ±max_abs when the scale rounded down.
      for (int c = begin; c < end; ++c) {
        const int q = static_cast<int>(std::clamp(std::nearbyint(src[c] / scale), -7.0f, 7.0f)) + 8;
        uint8_t& byte = codes[Int4CodeOffset(cols, r, c)];
        const int shift = Int4CodeShift(c);
        byte = static_cast<uint8_t>((byte & ~(0x0f << shift)) | (q << shift));
      }
    }
  }
}

OwnedWeightMatrix::OwnedWeightMatrix(WeightFormat format, const float* w, int rows, int cols, int group_size) {
  view_.format = format;
  view_.rows = rows;
  view_.cols = cols;
  const int64_t n = int64_t{rows} * cols;
  data_.assign(WeightDataBytes(format, rows, cols), 0);  // zeros (the allocator leaves resize uninitialized): kInt4's padding rows too
  switch (format) {
    case WeightFormat::kF32:
      std::copy_n(w, n, reinterpret_cast<float*>(data_.data()));
      break;
    case WeightFormat::kBF16:
      for (int64_t e = 0; e < n; ++e) reinterpret_cast<uint16_t*>(data_.data())[e] = FloatToBf16(w[e]);
      break;
    case WeightFormat::kF16:
      for (int64_t e = 0; e < n; ++e) reinterpret_cast<uint16_t*>(data_.data())[e] = FloatToHalf(w[e]);
      break;
    case WeightFormat::kInt8:
      scales_.resize(rows);
      row_sums_.resize(rows);
      QuantizeRowsInt8(w, 0, rows, cols, reinterpret_cast<int8_t*>(data_.data()), scales_.data(), row_sums_.data());
      view_.scales = scales_.data();
      view_.row_sums = row_sums_.data();
      break;
    case WeightFormat::kInt4:
      view_.group_size = group_size;
      group_scales_.resize(Int4PaddedRows(rows) * view_.num_groups());
      QuantizeRowsInt4(w, rows, cols, group_size, 0, data_.data(), group_scales_.data());
      view_.group_scales = group_scales_.data();
      break;
  }
  view_.data = data_.data();
}

}  // namespace kvspan::kernels
