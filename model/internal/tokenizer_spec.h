// Parsing of a Hugging Face tokenizer.json into a plain description (TokenizerSpec) of the
// parts this tokenizer supports. No lookup tables are built here; model/tokenizer.cc does that.
//
// Error codes (every message names the offending field, type or entry):
//   DataLoss         the text is not JSON at all (a truncated or corrupted file)
//   InvalidArgument  JSON of the wrong shape: a missing field, a wrong type, a negative or
//                    over-32-bit id, a merge that is neither "left right" nor [left, right]
//                    (consistency between vocabulary, merges and added tokens is checked by
//                    Tokenizer when it builds its tables, with the same code)
//   Unimplemented    a well-formed component this tokenizer does not implement: a model other
//                    than BPE, a normalizer/pre-tokenizer/decoder type outside the supported
//                    set, a Split regex other than the GPT-2/Llama 3/Qwen2 patterns, BPE
//                    dropout, continuing_subword_prefix, end_of_word_suffix
// Pure and thread-safe.
#ifndef KVSPAN_MODEL_INTERNAL_TOKENIZER_SPEC_H_
#define KVSPAN_MODEL_INTERNAL_TOKENIZER_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/internal/pretokenize.h"

namespace kvspan::model::internal {

struct NormalizerStep {
  enum class Kind { kNfc, kPrepend, kReplace };
  Kind kind = Kind::kNfc;
  std::string text;         // kPrepend: the prefix; kReplace: the string pattern
  std::string replacement;  // kReplace: what replaces each occurrence
};

enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  Kind kind = Kind::kSplit;
  SplitPattern pattern = SplitPattern::kGpt2;  // kSplit
  bool add_prefix_space = false;               // kByteLevel
  bool use_regex = true;                       // kByteLevel: split with the GPT-2 pattern
  std::string replacement = "\xE2\x96\x81";    // kMetaspace: U+2581 by default
  PrependScheme prepend_scheme = PrependScheme::kAlways;  // kMetaspace
  bool split = true;                           // kMetaspace: split before each replacement
};

struct DecoderSpec {
  bool byte_level = false;   // map GPT-2 byte characters back to bytes
  bool byte_fallback = false;  // <0xXX> tokens decode to the byte XX
  std::vector<std::pair<std::string, std::string>> replacements;  // (pattern, content), in order
  int strip_leading_spaces = 0;  // remove up to this many ' ' from the start of the output
};

struct AddedTokenSpec {
  int32_t id = 0;
  std::string content;
  bool special = false;
};

struct TokenizerSpec {
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;  // a ByteLevel or Metaspace step is last
  DecoderSpec decoder;
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::vector<AddedTokenSpec> added_tokens;
  // Content of the special token that post_processor TemplateProcessing puts first in a
  // single sequence (the implicit bos of files without tokenizer_config.json), if any.
  std::optional<std::string> template_bos_token;
};

absl::StatusOr<TokenizerSpec> ParseTokenizerJson(absl::string_view json);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_TOKENIZER_SPEC_H_
