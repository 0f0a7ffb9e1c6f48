// Group-wise asymmetric quantization primitives shared by the encoder and decoder
// (entry_block.cc). Pure functions; thread-safe.
#ifndef KVSPAN_KVCACHE_INTERNAL_QUANTIZE_H_
#define KVSPAN_KVCACHE_INTERNAL_QUANTIZE_H_

#include <cstdint>

namespace kvspan::kvcache::internal {

// fp16 bits of one group's parameters.
struct GroupParams {
  uint16_t scale = 0;
  uint16_t zero = 0;
};

// Parameters for a group whose values span [min_value, max_value] with `levels` codes:
// zero = min_value rounded DOWN to fp16, scale = (max_value - zero) / (levels - 1)
// rounded UP to fp16, so every value of the group lies in [zero, zero + (levels-1)*scale]
// and the nearest code is within scale / 2.
// REQUIRES: -kFp16Max <= min_value <= max_value <= kFp16Max, levels >= 2.
GroupParams ChooseGroupParams(float min_value, float max_value, int levels);

// The nearest code of `x` in [0, levels - 1].
uint32_t QuantizeValue(float x, GroupParams params, int levels);

// zero + q * scale in fp32 (the product is exact, the sum rounded once).
inline float DequantizeCode(uint32_t q, float scale, float zero) {
  return zero + static_cast<float>(q) * scale;
}

// Packed code rows: code of channel d at bit (d*bits) % 8 of byte (d*bits) / 8.
// REQUIRES: bits in {2, 4, 8}; q < 2^bits; the row's bits for d start zeroed (PutCode ORs).
inline void PutCode(uint8_t* row, int d, int bits, uint32_t q) {
  const int bit = d * bits;
  row[bit >> 3] |= static_cast<uint8_t>(q << (bit & 7));
}
inline uint32_t GetCode(const uint8_t* row, int d, int bits) {
  const int bit = d * bits;
  return (row[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
}

}  // namespace kvspan::kvcache::internal

#endif  // KVSPAN_KVCACHE_INTERNAL_QUANTIZE_H_
