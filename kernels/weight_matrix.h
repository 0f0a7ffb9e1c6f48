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
//   kInt4  symmetric, group-wise along a row: groups of group_size consecutive elements
//          (a multiple of 32; a row's last group may be shorter), one fp16 scale per group,
//          s = fp16(max |w| over the group / 7) (0 for an all-zero group), codes
//          q = round-half-even(w / s) clamped to [-7, 7], value = fp32(s) * q. The codes are
//          stored as q + 8 (in [1, 15]; 8 is code 0) in nibbles, each row in
//          ceil(cols / 64) blocks of 32 bytes: byte b of block t holds element 64t + b in
//          its low nibble and element 64t + 32 + b in its high nibble (one 32-byte load and
//          two masks give 64 codes in order); nibbles past cols hold 8. group_scales is
//          [rows, ceil(cols / group_size)] fp16 bits. 4.5 bits per weight at group 32 (as
//          llama.cpp's q4_0). Made at load by QuantizeRowsInt4.
//
// Thread-safety: the view and the functions are pure; the data is read-only.
#ifndef KVSPAN_KERNELS_WEIGHT_MATRIX_H_
#define KVSPAN_KERNELS_WEIGHT_MATRIX_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"

namespace kvspan::kernels {

enum class WeightFormat { kF32, kBF16, kF16, kInt8, kInt4 };

// "f32", "bf16", "f16", "int8", "int4".
absl::string_view WeightFormatName(WeightFormat format);

struct WeightMatrix {
  WeightFormat format = WeightFormat::kF32;
  // [rows, cols] row-major: float (kF32), uint16_t bits (kBF16, kF16), int8_t (kInt8);
  // kInt4: rows of WeightRowBytes(kInt4, cols) bytes of packed nibbles (above).
  const void* data = nullptr;
  const float* scales = nullptr;      // [rows] kInt8 only; null otherwise
  const int32_t* row_sums = nullptr;  // [rows] kInt8 only: sum of each row's codes
  int rows = 0;                       // out features, >= 1
  int cols = 0;                       // in features, >= 1
  const uint16_t* group_scales = nullptr;  // kInt4 only: [rows, num_groups()] fp16 bits
  int group_size = 0;                      // kInt4 only: a multiple of 32

  static WeightMatrix F32(const float* data, int rows, int cols) {
    return {WeightFormat::kF32, data, nullptr, nullptr, rows, cols};
  }

  // kInt4: groups per row, ceil(cols / group_size).
  int num_groups() const { return (cols + group_size - 1) / group_size; }

  // Bytes this matrix occupies (elements, scales and row sums).
  int64_t size_bytes() const;
};

// Bytes one row of `cols` elements of `format` occupies in `data` (cols * 4, 2, 2, 1; for
// kInt4, 32 * ceil(cols / 64)).
int64_t WeightRowBytes(WeightFormat format, int64_t cols);

// out[c] = the fp32 value of w[row, c] for c in [0, cols) (exact for kF32/kBF16/kF16; for
// kInt8 the fp32 product scales[row] * code, for kInt4 fp32(group scale) * code).
// REQUIRES: 0 <= row < w.rows; out has w.cols.
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

// Quantizes rows [row_begin, row_end) of the fp32 matrix `w` ([*, cols]) into the kInt4
// format above: packed rows of WeightRowBytes(kInt4, cols) bytes at codes + r * that, and
// scales[r * num_groups + g] with num_groups = ceil(cols / group_size). A group whose scale
// rounds to 0 in fp16 (max |w| < ~2e-7) keeps code 0. REQUIRES: cols >= 1; group_size a
// positive multiple of 32; all values finite with max |w| / 7 <= 65504.
void QuantizeRowsInt4(const float* w, int64_t row_begin, int64_t row_end, int cols, int group_size,
                      uint8_t* codes, uint16_t* scales);

// A WeightMatrix with its own storage, made from fp32 values in any format (tests and
// benchmarks; the model's loader fills its own buffers chunk by chunk). Movable (the view
// stays valid: vectors keep their buffers on move), not copyable.
class OwnedWeightMatrix {
 public:
  // REQUIRES: w has rows * cols finite values; for kInt4, group_size a positive multiple of 32.
  OwnedWeightMatrix(WeightFormat format, const float* w, int rows, int cols, int group_size = 32);
  OwnedWeightMatrix(OwnedWeightMatrix&&) = default;
  OwnedWeightMatrix& operator=(OwnedWeightMatrix&&) = default;
  OwnedWeightMatrix(const OwnedWeightMatrix&) = delete;
  OwnedWeightMatrix& operator=(const OwnedWeightMatrix&) = delete;

  const WeightMatrix& view() const { return view_; }

 private:
  WeightMatrix view_;
  std::vector<uint8_t> data_;
  std::vector<float> scales_;
  std::vector<int32_t> row_sums_;
  std::vector<uint16_t> group_scales_;
};

// The code (in [-7, 7]) of element c of a kInt4 row (`row` points at its first byte).
inline int Int4Code(const uint8_t* row, int c) {
  const uint8_t byte = row[(c / 64) * 32 + c % 32];
  return ((c % 64) < 32 ? (byte & 0x0f) : (byte >> 4)) - 8;
}

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_WEIGHT_MATRIX_H_
