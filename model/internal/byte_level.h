// GPT-2's reversible map between the 256 byte values and printable Unicode characters
// (bytes_to_unicode in GPT-2's encoder.py), used by ByteLevel pre-tokenizers and decoders.
// Thread-safe (immutable tables built on first use).
#ifndef KVSPAN_MODEL_INTERNAL_BYTE_LEVEL_H_
#define KVSPAN_MODEL_INTERNAL_BYTE_LEVEL_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kvspan::model::internal {

// The UTF-8 encoding of the character that stands for byte b.
const std::array<std::string, 256>& ByteLevelChars();

// Maps a byte-level token string back to bytes. Returns false (leaving *out unspecified) when
// some character of `token` stands for no byte.
bool ByteLevelDecode(absl::string_view token, std::string* out);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_BYTE_LEVEL_H_
