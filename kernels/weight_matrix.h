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
//          stored as q + 8 (in [1, 15]; 8 is code 0) in nibbles, in panels of kInt4PanelRows
//          = 16 consecutive rows (panel p holds rows 16p .. 16p + 15; the last panel is padded
//          to 16 rows), so that one sequential stream feeds the 16 lanes of a 512-bit kernel
//          register, a lane per row. Columns are padded to a multiple of 64. Panel p is 8
//          ceil(cols / 64) units of 64 bytes at data + p * 512 * ceil(cols / 64); unit u
//          holds columns [8u, 8u + 8): its bytes [4r, 4r + 4) belong to row 16p + r, byte 4r + j
//          holding element 8u + j in its low nibble and element 8u + 4 + j in its high
//          nibble (one 64-byte load and two masks give, per row, the 4 codes of one lane
//          twice over); nibbles past cols hold 8. group_scales is [ceil(rows / 16),
//          num_groups, 16] fp16 bits: the scale of row 16p + r, group g, at (p * num_groups +
//          g) * 16 + r (the 16 rows' scales of a group side by side: one vector). Padding
//          rows (past `rows`) have unspecified codes and scales (OwnedWeightMatrix and the
//          model's loader zero them); kernels compute and discard their dot products. 4.5 bits
//          per weight at group 32 (as llama.cpp's q4_0). Made at load by QuantizeRowsInt4;
//          Int4CodeOffset and Int4ScaleIndex below are this layout in code.
//
// Thread-safety: the view and the functions are pure; the data is read-only.
#ifndef KVSPAN_KERNELS_WEIGHT_MATRIX_H_
#define KVSPAN_KERNELS_WEIGHT_MATRIX_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "kernels/weight_allocator.h"

namespace kvspan::kernels {

enum class WeightFormat { kF32, kBF16, kF16, kInt8, kInt4 };

// "f32", "bf16", "f16", "int8", "int4".
absl::string_view WeightFormatName(WeightFormat format);

struct WeightMatrix {
  WeightFormat format = WeightFormat::kF32;
  // [rows, cols] row-major: float (kF32), uint16_t bits (kBF16, kF16), int8_t (kInt8);
  // kInt4: WeightDataBytes(kInt4, rows, cols) bytes of packed nibbles in panels (above).
  const void* data = nullptr;
  const float* scales = nullptr;      // [rows] kInt8 only; null otherwise
  const int32_t* row_sums = nullptr;  // [rows] kInt8 only: sum of each row's codes
  int rows = 0;                       // out features, >= 1
  int cols = 0;                       // in features, >= 1
  const uint16_t* group_scales = nullptr;  // kInt4 only: [ceil(rows / 4), num_groups(), 4] fp16
  int group_size = 0;                      // kInt4 only: a multiple of 32

  static WeightMatrix F32(const float* data, int rows, int cols) {
    return {WeightFormat::kF32, data, nullptr, nullptr, rows, cols};
  }

  // kInt4: groups per row, ceil(cols / group_size).
  int num_groups() const { return (cols + group_size - 1) / group_size; }

  // Bytes this matrix occupies (elements, scales and row sums).
  int64_t size_bytes() const;
};

// Rows of a kInt4 panel (above).
inline constexpr int kInt4PanelRows = 16;

// kInt4: rows rounded up to whole panels (the rows of group_scales, and of data's codes).
inline int64_t Int4PaddedRows(int64_t rows) { return (rows + kInt4PanelRows - 1) / kInt4PanelRows * kInt4PanelRows; }

// Bytes one row of `cols` elements of `format` occupies in `data` (cols * 4, 2, 2, 1; for
// kInt4, 32 * ceil(cols / 64), its share of a panel: kInt4 rows are not contiguous).
int64_t WeightRowBytes(WeightFormat format, int64_t cols);

// Bytes of `data` of a [rows, cols] matrix of `format`: rows * WeightRowBytes, with kInt4's
// rows rounded up to whole panels.
int64_t WeightDataBytes(WeightFormat format, int64_t rows, int64_t cols);

// kInt4: the byte of `data` that holds element c of `row` (its nibble: Int4CodeShift).
inline int64_t Int4CodeOffset(int64_t cols, int64_t row, int64_t c) {
  const int64_t units = (cols + 63) / 64 * 8;
  return ((row / kInt4PanelRows) * units + c / 8) * 64 + (row % kInt4PanelRows) * 4 + c % 4;
}

// kInt4: the shift of column c's nibble in its byte (4 for the high nibble).
inline int Int4CodeShift(int64_t c) { return (c & 4) != 0 ? 4 : 0; }

// kInt4: the index in group_scales of the scale of `row`, group g.
inline int64_t Int4ScaleIndex(int64_t num_groups, int64_t row, int64_t g) {
  return ((row / kInt4PanelRows) * num_groups + g) * kInt4PanelRows + row % kInt4PanelRows;
}

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

// Quantizes the fp32 rows `w` ([num_rows, cols]) into rows [first_row, first_row + num_rows)
// of the kInt4 matrix (format above) whose storage is `codes` (WeightDataBytes(kInt4, *,
// cols) bytes) and `scales` ([panels, num_groups, 4], num_groups = ceil(cols / group_size)),
// writing only those rows' bytes and scales: calls for disjoint row ranges may run at once.
// A group whose scale rounds to 0 in fp16 (max |w| < ~2e-7) keeps code 0. REQUIRES: cols >=
// 1; group_size a positive multiple of 32; all values finite with max |w| / 7 <= 65504.
void QuantizeRowsInt4(const float* w, int64_t num_rows, int cols, int group_size, int64_t first_row,
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
  std::vector<uint8_t, WeightAllocator<uint8_t>> data_;  // cache-line aligned, as the model's
  std::vector<float> scales_;
  std::vector<int32_t> row_sums_;
  std::vector<uint16_t> group_scales_;
};

// The code (in [-7, 7]) of element (row, c) of the kInt4 matrix `w`.
inline int Int4Code(const WeightMatrix& w, int row, int c) {
  const uint8_t byte = static_cast<const uint8_t*>(w.data)[Int4CodeOffset(w.cols, row, c)];
  return ((byte >> Int4CodeShift(c)) & 0x0f) - 8;
}

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_WEIGHT_MATRIX_H_
