#include "model/internal/nfc.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "model/internal/unicode.h"
#include "model/internal/unicode_tables.h"

namespace kvspan::model::internal {
namespace {

// Hangul syllables are composed and decomposed algorithmically (Unicode ch. 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// An invalid byte b is carried through as kInvalidTag | b: never in any table.
constexpr uint32_t kInvalidTag = 0x80000000;

const Decomposition* FindDecomposition(uint32_t cp) {
  const Decomposition* end = kDecompositions + kDecompositionsSize;
  const Decomposition* it = std::lower_bound(
      kDecompositions, end, cp, [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  return (it != end && it->cp == cp) ? it : nullptr;
}

void Decompose(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* d = cp < 0xC0 ? nullptr : FindDecomposition(cp);
  if (d == nullptr) {
    out->push_back(cp);
    return;
  }
  Decompose(d->first, out);
  if (d->second != 0) Decompose(d->second, out);
}

// Returns the primary composite of (first, second), or 0 when there is none.
uint32_t Compose(uint32_t first, uint32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const Composition* end = kCompositions + kCompositionsSize;
  const Composition* it = std::lower_bound(
      kCompositions, end, std::make_pair(first, second),
      [](const Composition& c, const std::pair<uint32_t, uint32_t>& v) {
        return c.first != v.first ? c.first < v.first : c.second < v.second;
      });
  return (it != end && it->first == first && it->second == second) ? it->composite : 0;
}

uint8_t ClassOf(uint32_t unit) {
  return (unit & kInvalidTag) ? 0 : CombiningClass(unit);
}

}  // namespace

std::string NormalizeNfc(absl::string_view text) {
  // Every code point below U+0300 is NFC and composes with nothing before it; their UTF-8
  // lead bytes are all below 0xCC, so text without a byte >= 0xCC is already NFC.
  if (std::none_of(text.begin(), text.end(),
                   [](char c) { return static_cast<unsigned char>(c) >= 0xCC; })) {
    return std::string(text);
  }
  std::vector<uint32_t> units;
  units.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Unit u = DecodeUtf8(text, pos);
    if (u.cp == kInvalidCodepoint) {
      units.push_back(kInvalidTag | static_cast<unsigned char>(text[pos]));
    } else {
      Decompose(u.cp, &units);
    }
    pos += u.length;
  }
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < units.size();) {
    if (ClassOf(units[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < units.size() && ClassOf(units[j]) != 0) ++j;
    std::stable_sort(units.begin() + i, units.begin() + j,
                     [](uint32_t a, uint32_t b) { return ClassOf(a) < ClassOf(b); });
    i = j;
  }
  // Canonical composition. last_class is the class of the last unit kept after the current
  // starter, or -1 when the candidate is adjacent to the starter (nothing can block it).
  std::vector<uint32_t> out;
  out.reserve(units.size());
  int starter = -1;
  int last_class = -1;
  for (uint32_t u : units) {
    const int cls = ClassOf(u);
    if (starter >= 0 && (last_class == -1 || last_class < cls) && !(u & kInvalidTag) &&
        !(out[starter] & kInvalidTag)) {
      const uint32_t composite = Compose(out[starter], u);
      if (composite != 0) {
        out[starter] = composite;
        continue;
      }
    }
    if (cls == 0) {
      starter = static_cast<int>(out.size());
      last_class = -1;
    } else {
      last_class = cls;
    }
    out.push_back(u);
  }
  std::string result;
  result.reserve(text.size());
  for (uint32_t u : out) {
    if (u & kInvalidTag) {
      result.push_back(static_cast<char>(u & 0xFF));
    } else {
      AppendUtf8(u, &result);
    }
  }
  return result;
}

}  // namespace kvspan::model::internal
