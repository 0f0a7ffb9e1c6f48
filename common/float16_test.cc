#include "common/float16.h"

#include <cmath>
#include <cstdint>
#include <random>

#include "gtest/gtest.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvspan {
namespace {

TEST(Float16Test, EveryFiniteHalfRoundTripsExactly) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(Float16Test, EveryBf16RoundTripsExactly) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBf16(f), b) << std::hex << b;
  }
}

TEST(Float16Test, RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00u);
  // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9: ties to even (up).
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02u);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bffu);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bffu);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00u);  // ties to even = inf
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000u);  // half of the smallest subnormal: to even 0
  EXPECT_EQ(FloatToHalf(0x1p-24f * 1.5f), 0x0002u);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000u);
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f), 0x3f80u);        // tie, even stays
  EXPECT_EQ(FloatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82u);    // tie, odd rounds up
}

#if defined(__F16C__)
TEST(Float16Test, MatchesHardwareConversionOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t x = bits(rng);
    if (i % 2) x = (x & 0x8fffffffu) | 0x30000000u;  // bias half the draws to fp16's range
    const float f = std::bit_cast<float>(x);
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)) << f;
  }
}
#endif

}  // namespace
}  // namespace kvspan
