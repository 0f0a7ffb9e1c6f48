#include "model/internal/pretokenize.h"

#include <algorithm>
#include <cstdint>

#include "model/internal/unicode.h"

namespace kvspan::model::internal {

const char kGpt2PatternSource[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char kLlama3PatternSource[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kQwen2PatternSource[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::optional<SplitPattern> FindSplitPattern(absl::string_view regex) {
  if (regex == kGpt2PatternSource) return SplitPattern::kGpt2;
  if (regex == kLlama3PatternSource) return SplitPattern::kLlama3;
  if (regex == kQwen2PatternSource) return SplitPattern::kQwen2;
  return std::nullopt;
}

namespace {

enum CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// The text decoded once: class and code point per character, byte offsets (n + 1 entries).
struct Chars {
  std::vector<uint32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> offset;
  size_t size() const { return cp.size(); }
};

Chars DecodeChars(absl::string_view text) {
  Chars c;
  c.cp.reserve(text.size());
  c.cls.reserve(text.size());
  c.offset.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Unit u = DecodeUtf8(text, pos);
    c.cp.push_back(u.cp);
    c.cls.push_back(IsLetter(u.cp) ? kLetter
                    : IsNumber(u.cp) ? kNumber
                    : IsWhiteSpace(u.cp) ? kSpace
                                         : kOther);
    c.offset.push_back(pos);
    pos += u.length;
  }
  c.offset.push_back(text.size());
  return c;
}

size_t RunOf(const Chars& c, size_t i, CharClass cls) {
  size_t j = i;
  while (j < c.size() && c.cls[j] == cls) ++j;
  return j;
}

// Lower-cases for the (?i:...) contractions the way Unicode simple case folding does for the
// letters involved: ASCII, plus U+017F LATIN SMALL LETTER LONG S, which folds to 's'.
uint32_t Fold(uint32_t cp, bool ignore_case) {
  if (!ignore_case) return cp;
  if (cp >= 'A' && cp <= 'Z') return cp + ('a' - 'A');
  if (cp == 0x17F) return 's';
  return cp;
}

// 's|'t|'re|'ve|'m|'ll|'d at i: returns the end index, or i when there is no match.
size_t MatchContraction(const Chars& c, size_t i, bool ignore_case) {
  if (c.cp[i] != '\'' || i + 1 >= c.size()) return i;
  const uint32_t a = Fold(c.cp[i + 1], ignore_case);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 >= c.size()) return i;
  const uint32_t b = Fold(c.cp[i + 2], ignore_case);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  return i;
}

// \s+(?!\S)|\s+ at a white-space character i.
size_t MatchTrailingSpaces(const Chars& c, size_t i) {
  const size_t end = RunOf(c, i, kSpace);
  if (end == c.size()) return end;   // (?!\S) holds at the end of the text
  if (end - i >= 2) return end - 1;  // back off one so the last space joins the next word
  return end;                        // \s+
}

size_t MatchGpt2(const Chars& c, size_t i) {
  if (size_t e = MatchContraction(c, i, /*ignore_case=*/false); e != i) return e;
  if (c.cp[i] == ' ' && i + 1 < c.size() && c.cls[i + 1] != kSpace) {
    return RunOf(c, i + 1, c.cls[i + 1]);  // ' ?\p{L}+', ' ?\p{N}+' or ' ?[^\s\p{L}\p{N}]+'
  }
  if (c.cls[i] != kSpace) return RunOf(c, i, c.cls[i]);
  return MatchTrailingSpaces(c, i);
}

size_t MatchLlama3(const Chars& c, size_t i, size_t max_digits) {
  if (size_t e = MatchContraction(c, i, /*ignore_case=*/true); e != i) return e;
  const uint32_t cp = c.cp[i];
  const CharClass cls = c.cls[i];
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (cls == kLetter) return RunOf(c, i, kLetter);
  if (cls != kNumber && cp != '\r' && cp != '\n' && i + 1 < c.size() &&
      c.cls[i + 1] == kLetter) {
    return RunOf(c, i + 1, kLetter);
  }
  // \p{N}{1,3} or \p{N}
  if (cls == kNumber) return std::min(RunOf(c, i, kNumber), i + max_digits);
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t other_start = c.size();
  if (cp == ' ' && i + 1 < c.size() && c.cls[i + 1] == kOther) {
    other_start = i + 1;
  } else if (cls == kOther) {
    other_start = i;
  }
  if (other_start != c.size()) {
    size_t e = RunOf(c, other_start, kOther);
    while (e < c.size() && (c.cp[e] == '\r' || c.cp[e] == '\n')) ++e;
    return e;
  }
  // \s*[\r\n]+ : the greedy \s* backs off to the last \r or \n of the white-space run, and
  // [\r\n]+ then takes just that one (what follows it in the run is not \r or \n).
  const size_t run_end = RunOf(c, i, kSpace);
  for (size_t j = run_end; j > i; --j) {
    if (c.cp[j - 1] == '\r' || c.cp[j - 1] == '\n') return j;
  }
  return MatchTrailingSpaces(c, i);
}

}  // namespace

void SplitWithPattern(absl::string_view text, SplitPattern pattern,
                      std::vector<absl::string_view>* pieces) {
  const Chars c = DecodeChars(text);
  for (size_t i = 0; i < c.size();) {
    size_t end;
    switch (pattern) {
      case SplitPattern::kGpt2:
        end = MatchGpt2(c, i);
        break;
      case SplitPattern::kLlama3:
        end = MatchLlama3(c, i, /*max_digits=*/3);
        break;
      case SplitPattern::kQwen2:
      default:
        end = MatchLlama3(c, i, /*max_digits=*/1);
        break;
    }
    pieces->push_back(text.substr(c.offset[i], c.offset[end] - c.offset[i]));
    i = end;
  }
}

}  // namespace kvspan::model::internal
