#include "kvcache/internal/quantize.h"

#include <algorithm>
#include <cmath>

#include "common/float16.h"

namespace kvspan::kvcache::internal {
namespace {

// Next fp16 value towards -inf / +inf from finite `h` (stays finite in our use: callers
// pass values within +-kFp16Max that need at most one step).
uint16_t HalfNextDown(uint16_t h) {
  if (h == 0x0000u) return 0x8001u;           // +0 -> -smallest subnormal
  if (h & 0x8000u) return static_cast<uint16_t>(h + 1);  // negative: grow magnitude
  return static_cast<uint16_t>(h - 1);
}
uint16_t HalfNextUp(uint16_t h) {
  if (h == 0x8000u) return 0x0001u;           // -0 -> +smallest subnormal
  if (h & 0x8000u) return static_cast<uint16_t>(h - 1);
  return static_cast<uint16_t>(h + 1);
}

}  // namespace

GroupParams ChooseGroupParams(float min_value, float max_value, int levels) {
  GroupParams p;
  p.zero = FloatToHalf(min_value);
  if (HalfToFloat(p.zero) > min_value) p.zero = HalfNextDown(p.zero);
  if (p.zero == 0x8000u) p.zero = 0;  // canonical +0
  const double range = static_cast<double>(max_value) - HalfToFloat(p.zero);
  const double wanted = range / (levels - 1);
  p.scale = FloatToHalf(static_cast<float>(wanted));
  if (static_cast<double>(HalfToFloat(p.scale)) < wanted) p.scale = HalfNextUp(p.scale);
  return p;
}

uint32_t QuantizeValue(float x, GroupParams params, int levels) {
  const double scale = HalfToFloat(params.scale);
  if (scale == 0.0) return 0;  // constant group: every value equals zero
  const double t = (static_cast<double>(x) - HalfToFloat(params.zero)) / scale;
  const double q = std::nearbyint(t);
  return static_cast<uint32_t>(std::clamp(q, 0.0, static_cast<double>(levels - 1)));
}

}  // namespace kvspan::kvcache::internal
