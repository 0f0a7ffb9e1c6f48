#include "model/internal/byte_level.h"

#include "model/internal/unicode.h"

namespace kvspan::model::internal {
namespace {

// Code point for each byte: printable Latin-1 bytes stand for themselves, the other 68 bytes
// take U+0100 upward in byte order.
std::array<uint32_t, 256> BuildCodepoints() {
  std::array<uint32_t, 256> cps{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    cps[b] = printable ? b : next++;
  }
  return cps;
}

const std::array<uint32_t, 256>& Codepoints() {
  static const std::array<uint32_t, 256> cps = BuildCodepoints();
  return cps;
}

// Inverse map; every code point involved is below 0x144.
const std::array<int16_t, 0x144>& Inverse() {
  static const std::array<int16_t, 0x144> inv = [] {
    std::array<int16_t, 0x144> a;
    a.fill(-1);
    for (int b = 0; b < 256; ++b) a[Codepoints()[b]] = static_cast<int16_t>(b);
    return a;
  }();
  return inv;
}

}  // namespace

const std::array<std::string, 256>& ByteLevelChars() {
  static const std::array<std::string, 256> chars = [] {
    std::array<std::string, 256> a;
    for (int b = 0; b < 256; ++b) AppendUtf8(Codepoints()[b], &a[b]);
    return a;
  }();
  return chars;
}

bool ByteLevelDecode(absl::string_view token, std::string* out) {
  const auto& inv = Inverse();
  for (size_t pos = 0; pos < token.size();) {
    const Utf8Unit u = DecodeUtf8(token, pos);
    if (u.cp >= inv.size() || inv[u.cp] < 0) return false;
    out->push_back(static_cast<char>(inv[u.cp]));
    pos += u.length;
  }
  return true;
}

}  // namespace kvspan::model::internal
