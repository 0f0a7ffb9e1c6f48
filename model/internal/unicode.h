// UTF-8 decoding that never fails and the Unicode character classes the tokenizer needs.
// Invalid UTF-8 is not an error anywhere in the tokenizer: DecodeUtf8 reports each byte that
// does not start a complete, valid sequence as a one-byte "invalid" unit, which is in no
// character class (not a letter, number or white space) and passes through NFC unchanged.
// All functions are pure and thread-safe.
#ifndef KVSPAN_MODEL_INTERNAL_UNICODE_H_
#define KVSPAN_MODEL_INTERNAL_UNICODE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kvspan::model::internal {

// Code point value reported for a byte that is not part of a valid UTF-8 sequence.
inline constexpr uint32_t kInvalidCodepoint = 0xFFFFFFFF;

struct Utf8Unit {
  uint32_t cp;   // the code point, or kInvalidCodepoint
  int length;    // bytes consumed, 1..4 (always 1 for an invalid byte)
};

// Decodes the unit starting at text[pos]. REQUIRES: pos < text.size().
// Rejects overlong forms, surrogates, code points above U+10FFFF and truncated sequences.
Utf8Unit DecodeUtf8(absl::string_view text, size_t pos);

// Appends the UTF-8 encoding of a valid code point.
void AppendUtf8(uint32_t cp, std::string* out);

// Number of bytes at the end of `bytes` that form a proper prefix of a valid UTF-8 sequence
// (0..3): the bytes a streaming decoder must hold back until the next token arrives.
size_t IncompleteUtf8Suffix(absl::string_view bytes);

bool IsLetter(uint32_t cp);      // \p{L}
bool IsNumber(uint32_t cp);      // \p{N}
bool IsWhiteSpace(uint32_t cp);  // \s (White_Space)
uint8_t CombiningClass(uint32_t cp);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_UNICODE_H_
