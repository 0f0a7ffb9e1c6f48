// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical
// composition), for normalizers of type "NFC" (Qwen2). Data: unicode_tables.cc, generated
// from Python's unicodedata. Bytes that are not valid UTF-8 pass through unchanged and act as
// starters that never compose. Pure and thread-safe.
#ifndef KVSPAN_MODEL_INTERNAL_NFC_H_
#define KVSPAN_MODEL_INTERNAL_NFC_H_

#include <string>

#include "absl/strings/string_view.h"

namespace kvspan::model::internal {

// Returns the NFC form of `text`.
std::string NormalizeNfc(absl::string_view text);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_NFC_H_
