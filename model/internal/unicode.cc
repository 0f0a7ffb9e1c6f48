#include "model/internal/unicode.h"

#include <algorithm>

#include "model/internal/unicode_tables.h"

namespace kvspan::model::internal {
namespace {

bool InRanges(const CodepointRange* ranges, size_t n, uint32_t cp) {
  const CodepointRange* end = ranges + n;
  const CodepointRange* it = std::upper_bound(
      ranges, end, cp, [](uint32_t v, const CodepointRange& r) { return v < r.lo; });
  return it != ranges && cp <= (it - 1)->hi;
}

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// For a lead byte: the sequence length and the allowed range of the second byte (which
// excludes overlong forms, surrogates and values above U+10FFFF). Returns 0 for a byte that
// cannot start a multi-byte sequence.
int LeadInfo(unsigned char c, unsigned char* second_lo, unsigned char* second_hi) {
  *second_lo = 0x80;
  *second_hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c == 0xE0) { *second_lo = 0xA0; return 3; }
  if (c >= 0xE1 && c <= 0xEC) return 3;
  if (c == 0xED) { *second_hi = 0x9F; return 3; }
  if (c >= 0xEE && c <= 0xEF) return 3;
  if (c == 0xF0) { *second_lo = 0x90; return 4; }
  if (c >= 0xF1 && c <= 0xF3) return 4;
  if (c == 0xF4) { *second_hi = 0x8F; return 4; }
  return 0;
}

}  // namespace

Utf8Unit DecodeUtf8(absl::string_view text, size_t pos) {
  const auto c0 = static_cast<unsigned char>(text[pos]);
  if (c0 < 0x80) return {c0, 1};
  unsigned char lo, hi;
  const int len = LeadInfo(c0, &lo, &hi);
  if (len == 0 || pos + len > text.size()) return {kInvalidCodepoint, 1};
  const auto c1 = static_cast<unsigned char>(text[pos + 1]);
  if (c1 < lo || c1 > hi) return {kInvalidCodepoint, 1};
  uint32_t cp = (c0 & (0xFF >> (len + 1))) << 6 | (c1 & 0x3F);
  for (int i = 2; i < len; ++i) {
    const auto ci = static_cast<unsigned char>(text[pos + i]);
    if (!IsContinuation(ci)) return {kInvalidCodepoint, 1};
    cp = cp << 6 | (ci & 0x3F);
  }
  return {cp, len};
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t IncompleteUtf8Suffix(absl::string_view bytes) {
  // A proper prefix is a lead byte followed by fewer continuation bytes than it needs, each
  // within the allowed range; look at most 3 bytes back.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto lead = static_cast<unsigned char>(bytes[n - back]);
    if (IsContinuation(lead)) continue;
    unsigned char lo, hi;
    const int len = LeadInfo(lead, &lo, &hi);
    if (len == 0 || static_cast<size_t>(len) <= back) return 0;
    if (back >= 2) {
      const auto c1 = static_cast<unsigned char>(bytes[n - back + 1]);
      if (c1 < lo || c1 > hi) return 0;
    }
    return back;
  }
  return 0;
}

bool IsLetter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return InRanges(kLetterRanges, kLetterRangesSize, cp);
}

bool IsNumber(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return InRanges(kNumberRanges, kNumberRangesSize, cp);
}

bool IsWhiteSpace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return InRanges(kWhiteSpaceRanges, kWhiteSpaceRangesSize, cp);
}

uint8_t CombiningClass(uint32_t cp) {
  if (cp < 0x300) return 0;
  const CombiningClassRange* begin = kCombiningClasses;
  const CombiningClassRange* end = kCombiningClasses + kCombiningClassesSize;
  const CombiningClassRange* it = std::upper_bound(
      begin, end, cp, [](uint32_t v, const CombiningClassRange& r) { return v < r.lo; });
  if (it == begin || cp > (it - 1)->hi) return 0;
  return (it - 1)->combining_class;
}

}  // namespace kvspan::model::internal
