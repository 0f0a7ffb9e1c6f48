// 16-bit float conversions (checkpoint tensors, span codecs): IEEE binary16 (fp16) and bfloat16.
// Bit-exact, portable (no F16C), round-to-nearest-even from fp32. Header-only, so any
// folder can use it without linking kvspan::common. These are the definitions the
// serialized span format (docs/span-format.md) refers to; fused kernels must
// produce the same fp32 values from the same bits.
// All functions are pure and thread-safe.
#ifndef KVSPAN_COMMON_FLOAT16_H_
#define KVSPAN_COMMON_FLOAT16_H_

#include <bit>
#include <cmath>
#include <cstdint>

namespace kvspan {

// Largest finite fp16 value.
inline constexpr float kFp16Max = 65504.0f;

// fp32 -> fp16 bits, round to nearest even; overflow -> inf, NaN -> a quiet NaN.
inline uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {                        // < 2^-14: an fp16 subnormal (or zero)
    // Scaling by 2^24 is exact; nearbyint rounds to nearest even in the default mode.
    const float units = std::bit_cast<float>(ax) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(units));
  }
  const uint32_t exp = (ax >> 23) - 127 + 15;
  const uint32_t mant = ax & 0x7fffffu;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into exp is right
  return static_cast<uint16_t>(sign | h);
}

// fp16 bits -> fp32 (exact).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;  // 2^-24
    return sign ? -mag : mag;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

// fp32 -> bf16 bits, round to nearest even; NaN -> a quiet NaN.
inline uint16_t FloatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// bf16 bits -> fp32 (exact).
inline float Bf16ToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

}  // namespace kvspan

#endif  // KVSPAN_COMMON_FLOAT16_H_
