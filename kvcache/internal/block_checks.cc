#include "kvcache/internal/block_checks.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/status_macros.h"
#include "kvcache/span_geometry.h"

namespace kvspan::kvcache::internal {
namespace {

absl::Status Bad(absl::StatusCode code, absl::string_view what) {
  return absl::Status(code, absl::StrCat("entry block: ", what));
}

// A 16-bit float is infinite or NaN exactly when its exponent bits are all ones (bf16:
// 8 bits at 0x7F80, fp16: 5 bits at 0x7C00). One branch-free pass the compiler vectorizes:
// every stored span and every shipped span goes through it.
bool AllFinite16(Codec codec, const std::vector<uint8_t>& data) {
  const uint16_t exponent = codec == Codec::kBF16 ? 0x7F80u : 0x7C00u;
  const size_t n = data.size() / 2;
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, data.data() + 2 * i, 2);
    bad |= static_cast<uint32_t>((h & exponent) == exponent);
  }
  return bad == 0;
}

// Scales finite and >= 0 (a negative scale has no meaning), zeros finite.
bool ParamsValid(const std::vector<uint16_t>& params) {
  for (size_t i = 0; i + 1 < params.size(); i += 2) {
    const float scale = HalfToFloat(params[i]);
    const float zero = HalfToFloat(params[i + 1]);
    if (!std::isfinite(scale) || !(scale >= 0.0f) || (params[i] & 0x8000u) ||
        !std::isfinite(zero)) {
      return false;
    }
  }
  return true;
}

// The bits past head_dim * bits in each row's last byte must be zero (canonical form).
bool PaddingZero(const std::vector<uint8_t>& data, int64_t row_bytes, int used_bits) {
  const int pad = static_cast<int>(row_bytes * 8 - used_bits);
  if (pad == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xffu << (8 - pad));
  for (size_t r = row_bytes - 1; r < data.size(); r += row_bytes) {
    if (data[r] & mask) return false;
  }
  return true;
}

constexpr uint16_t kHalfOne = 0x3C00;  // fp16 1.0

// Block-local sharing rules (entry_block.h "Shared blocks").
absl::Status CheckSharing(const EntryBlock& b, absl::StatusCode code) {
  const size_t n = b.positions.size();
  if (!b.is_shared()) {
    if (b.shares != BlockShares::kNone || !b.key_scales.empty() || !b.value_scales.empty()) {
      return Bad(code, "an owned block has a sharing mode or scales");
    }
    return absl::OkStatus();
  }
  if (b.source_layer < 0) {
    return Bad(code, absl::StrCat("source layer ", b.source_layer, " is negative"));
  }
  if (b.shares != BlockShares::kKeys && b.shares != BlockShares::kKeysAndValues) {
    return Bad(code, "a shared block shares neither keys nor keys and values");
  }
  if (!b.value_scales.empty() && b.shares != BlockShares::kKeysAndValues) {
    return Bad(code, "value scales on a block that owns its values");
  }
  for (const std::vector<uint16_t>* scales : {&b.key_scales, &b.value_scales}) {
    if (!scales->empty() && scales->size() != n) {
      return Bad(code, absl::StrCat(scales->size(), " scales for ", n, " entries"));
    }
    bool all_ones = true;
    for (uint16_t h : *scales) {
      const float f = HalfToFloat(h);
      if (!std::isfinite(f) || std::signbit(f)) {
        return Bad(code, absl::StrCat("scale ", f, " is not finite and >= +0"));
      }
      all_ones &= h == kHalfOne;
    }
    // One representation per meaning (canonical bytes): all-ones scales are stored empty.
    if (!scales->empty() && all_ones) return Bad(code, "scales all 1 (store them empty)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckBlock(const EntryBlock& b, absl::StatusCode code) {
  if (!IsKnownCodec(static_cast<uint8_t>(b.codec))) {
    return Bad(code, absl::StrCat("unknown codec id ", static_cast<int>(b.codec)));
  }
  if (IsQuantized(b.codec)) {
    if (b.group_size < 1 || b.group_size > kMaxGroupSize) {
      return Bad(code, absl::StrCat("group_size ", b.group_size, " out of [1, ",
                                    kMaxGroupSize, "]"));
    }
  } else if (b.group_size != 0) {
    return Bad(code, absl::StrCat("group_size ", b.group_size, " for ", CodecName(b.codec),
                                  " (must be 0)"));
  }
  if (b.head_dim < 1 || b.head_dim > kMaxHeadDim) {
    return Bad(code, absl::StrCat("head_dim ", b.head_dim, " out of range"));
  }
  const int n = b.num_entries();
  const int64_t row_bytes = CodeRowBytes(b.codec, b.head_dim);
  RETURN_IF_ERROR(CheckSharing(b, code));
  const int64_t key_rows = b.owns_keys() ? n : 0;
  const int64_t value_rows = b.owns_values() ? n : 0;
  if (b.log_counts.size() != static_cast<size_t>(n) ||
      b.key_data.size() != static_cast<size_t>(key_rows * row_bytes) ||
      b.value_data.size() != static_cast<size_t>(value_rows * row_bytes) ||
      static_cast<int64_t>(b.key_params.size()) !=
          KeyParamCount(b.codec, b.group_size, key_rows, b.head_dim) ||
      static_cast<int64_t>(b.value_params.size()) !=
          ValueParamCount(b.codec, b.group_size, value_rows, b.head_dim)) {
    return Bad(code, absl::StrCat("array sizes do not match ", n, " entries of ",
                                  CodecName(b.codec), " with head_dim ", b.head_dim));
  }
  for (int i = 1; i < n; ++i) {
    if (b.positions[i] < b.positions[i - 1]) {
      return Bad(code, absl::StrCat("positions decrease at entry ", i));
    }
  }
  for (int i = 0; i < n; ++i) {
    // -0.0 is rejected too: one bit pattern per value keeps the serialized form canonical.
    if (!std::isfinite(b.log_counts[i]) || std::signbit(b.log_counts[i])) {
      return Bad(code, absl::StrCat("log_count ", b.log_counts[i], " of entry ", i,
                                    " is not finite and >= +0"));
    }
  }
  if (IsQuantized(b.codec)) {
    if (!ParamsValid(b.key_params) || !ParamsValid(b.value_params)) {
      return Bad(code, "a scale is negative or a scale/zero is not finite");
    }
    const int used_bits = b.head_dim * CodecBits(b.codec);
    if (!PaddingZero(b.key_data, row_bytes, used_bits) ||
        !PaddingZero(b.value_data, row_bytes, used_bits)) {
      return Bad(code, "non-zero padding bits in a packed row");
    }
  } else if (!AllFinite16(b.codec, b.key_data) || !AllFinite16(b.codec, b.value_data)) {
    return Bad(code, "a 16-bit key or value is not finite");
  }
  return absl::OkStatus();
}

}  // namespace kvspan::kvcache::internal
