#include "cachestore/span_key.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kvspan::cachestore {

absl::StatusOr<SpanKey> SpanKey::FromBytes(absl::string_view raw, absl::string_view what) {
  if (raw.size() != kSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be ", kSize, " bytes, got ", raw.size()));
  }
  SpanKey key;
  std::memcpy(key.bytes.data(), raw.data(), kSize);
  return key;
}

absl::StatusOr<SpanKey> SpanKey::FromHex(absl::string_view hex) {
  if (hex.size() != 2 * kSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("hex key must be ", 2 * kSize, " digits, got ", hex.size()));
  }
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat("hex key has a non-hex digit: ", hex));
    }
  }
  return FromBytes(absl::HexStringToBytes(hex));
}

std::string SpanKey::ToHex() const { return absl::BytesToHexString(AsStringView()); }

bool SpanKey::IsZero() const {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

}  // namespace kvspan::cachestore
