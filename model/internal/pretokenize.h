// The three pre-tokenization regexes that real tokenizer.json files use, as hand-written
// recognizers (no regex engine). Each reproduces the leftmost-first, backtracking semantics of
// the pattern exactly, over Unicode classes from unicode.h:
//   kGpt2   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kLlama3 (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   kQwen2  as kLlama3 with \p{N} instead of \p{N}{1,3}
// FindSplitPattern recognizes a pattern by its exact source string (as found in
// tokenizer.json); anything else is unsupported. Bytes that are not valid UTF-8 count as one
// character each, in no class (they match [^\s\p{L}\p{N}]). Pure and thread-safe.
#ifndef KVSPAN_MODEL_INTERNAL_PRETOKENIZE_H_
#define KVSPAN_MODEL_INTERNAL_PRETOKENIZE_H_

#include <optional>
#include <vector>

#include "absl/strings/string_view.h"

namespace kvspan::model::internal {

enum class SplitPattern { kGpt2, kLlama3, kQwen2 };

// The pattern source strings, exactly as they appear in tokenizer.json (after JSON unescaping).
extern const char kGpt2PatternSource[];
extern const char kLlama3PatternSource[];
extern const char kQwen2PatternSource[];

// Returns the pattern whose source is exactly `regex`, or nullopt.
std::optional<SplitPattern> FindSplitPattern(absl::string_view regex);

// Appends to `pieces` the split of `text` with `Isolated` behaviour: every match is a piece
// and so is every gap between matches (these patterns leave none). The pieces are views into
// `text`, non-empty, and concatenate to `text`.
void SplitWithPattern(absl::string_view text, SplitPattern pattern,
                      std::vector<absl::string_view>* pieces);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_PRETOKENIZE_H_
