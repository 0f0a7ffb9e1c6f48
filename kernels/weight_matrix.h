// The weight matrices of linear layers in the formats kvspan keeps them in memory, as a
// borrowed view that kernels::Linear (gemm.h) dispatches on. A matrix is [rows, cols]
// row-major, rows = out features, cols = in features (the safetensors layout).
//
// Formats (the element bits as stored):
//   kF32   float. What f32 checkpoints keep.
//   kBF16  bfloat16 bits (uint16_t): the checkpoint's values exactly, never expanded.
//   kF16   IEEE binary16 bits (uint16_t): fp16 checkpoints keep fp16 (their 10 mantissa
//          bits do not fit bf16's 7, so converting would lose precision).
//   kInt8  symmetric per output channel ("per row"): codes int8_t in [-127, 127] and one
//          fp32 scale per row, value = scales[r] * codes[r, c]. scales[r] = max_c |w[r, c]|
//          / 127 (0 for an all-zero row); codes = round-half-even(w / scales[r]). row_sums[r]
//          = sum_c codes[r, c] (int32), which the AVX-512 VNNI kernel needs (see gemm.h).
//          Made at load by QuantizeRowsInt8 from the checkpoint's values.
//
// Thread-safety: the view and the functions are pure; the data is read-only.
#ifndef KVSPAN_KERNELS_WEIGHT_MATRIX_H_
#define KVSPAN_KERNELS_WEIGHT_MATRIX_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace kvspan::kernels {

enum class WeightFormat { kF32, kBF16, kF16, kInt8 };

// "f32", "bf16", "f16", "int8".
absl::string_view WeightFormatName(WeightFormat format);

struct WeightMatrix {
  WeightFormat format = WeightFormat::kF32;
  // [rows, cols] row-major: float (kF32), uint16_t bits (kBF16, kF16), int8_t (kInt8).
  const void* data = nullptr;
  const float* scales = nullptr;      // [rows] kInt8 only; null otherwise
  const int32_t* row_sums = nullptr;  // [rows] kInt8 only: sum of each row's codes
  int rows = 0;                       // out features, >= 1
  int cols = 0;                       // in features, >= 1

  static WeightMatrix F32(const float* data, int rows, int cols) {
    return {WeightFormat::kF32, data, nullptr, nullptr, rows, cols};
  }

  // Bytes this matrix occupies (elements, scales and row sums).
  int64_t size_bytes() const;
};

// Bytes per element of `format` (4, 2, 2, 1).
int WeightElementBytes(WeightFormat format);

// out[c] = the fp32 value of w[row, c] for c in [0, cols) (exact for kF32/kBF16/kF16; for
// kInt8 the fp32 product scales[row] * code). REQUIRES: 0 <= row < w.rows; out has w.cols.
void DequantizeRow(const WeightMatrix& w, int row, float* out);

// The kInt8 quantization of one row of k values, for weights and for activations alike:
// writes q[0, k) = round-half-even(x · (127 / max|x|)) (fp32 product; codes in [-127, 127])
// and returns the scale max|x| / 127 (0 for an all-zero row, then q = 0).
// REQUIRES: k >= 1; x finite.
float QuantizeRowInt8(const float* x, int k, int8_t* q);

// Quantizes rows [row_begin, row_end) of the fp32 matrix `w` ([*, cols]) with
// QuantizeRowInt8, writing codes[r * cols + c], scales[r] and row_sums[r] for those rows.
// REQUIRES: cols >= 1; all values finite.
void QuantizeRowsInt8(const float* w, int64_t row_begin, int64_t row_end, int cols, int8_t* codes,
                      float* scales, int32_t* row_sums);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_WEIGHT_MATRIX_H_
