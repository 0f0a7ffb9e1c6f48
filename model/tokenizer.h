// Tokenizer: a Hugging Face tokenizer.json (BPE models) in C++.
//
// Supported (see model/README.md for the exact list and the known deviations):
//   * byte-level BPE: ByteLevel pre-tokenizer (GPT-2 regex), or Split(Llama 3 / Qwen2 regex)
//     + ByteLevel(use_regex: false); NFC normalizer; ignore_merges; merges as "a b" or [a, b]
//   * metaspace BPE with byte_fallback (Llama 2 / Mistral): Prepend + Replace normalizers, or
//     a Metaspace pre-tokenizer; Replace/ByteFallback/Fuse/Strip or Metaspace decoders
//   * added tokens, matched whole (leftmost-longest) in the raw text before anything else
//   * bos/eos from tokenizer_config.json, config.json and generation_config.json
//
// Errors (absl::Status codes):
//   NotFound         dir/tokenizer.json does not exist (other unreadable files: the errno code)
//   DataLoss         a file that is not JSON (e.g. truncated): tokenizer.json or a config file
//   InvalidArgument  JSON of the wrong shape, or an inconsistent vocabulary (duplicate id,
//                    a merge or special token naming an unknown token, a missing byte token,
//                    a config id outside the vocabulary)
//   Unimplemented    a model, normalizer, pre-tokenizer, decoder or Split regex outside the
//                    supported set (the message names it); BPE dropout, subword prefixes or
//                    suffixes; a BPE that could not encode every input (no byte-level
//                    pre-tokenizer, byte_fallback or unk_token)
//
// Thread safety: a loaded Tokenizer is immutable; every method is const and thread-safe.
#ifndef KVSPAN_MODEL_TOKENIZER_H_
#define KVSPAN_MODEL_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/internal/bpe.h"
#include "model/internal/tokenizer_spec.h"

namespace kvspan::model {

namespace internal {
struct SpecialTokenConfig;
}  // namespace internal

struct DecodeOptions {
  // Leave out tokens marked "special" in added_tokens (bos, eos, pad, chat markers).
  bool skip_special_tokens = false;
};

class Tokenizer {
 public:
  // Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json (bos_token,
  // eos_token, pad_token, add_bos_token), dir/config.json and dir/generation_config.json
  // (bos_token_id, eos_token_id: an int or a list, pad_token_id; generation_config.json wins).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromDir(const std::string& dir);

  // Parses the contents of a tokenizer.json. bos is the first special token of a
  // TemplateProcessing post-processor, if any (then add_bos() is true); no eos.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view tokenizer_json);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encodes text to ids, WITHOUT bos/eos. Added tokens in the text are matched whole; the rest
  // goes through normalizer, pre-tokenizer and BPE. Total: never fails for any byte string.
  // Invalid UTF-8 is kept byte for byte: byte-level models map the bytes, byte_fallback models
  // emit <0xXX> tokens, so Decode gives the same bytes back.
  std::vector<int32_t> Encode(absl::string_view text) const;

  // Encode plus bos in front when add_bos() and bos_id() exists: what generation feeds a model.
  std::vector<int32_t> EncodeForGeneration(absl::string_view text) const;

  // Decodes ids to bytes: added tokens as their content, other tokens through the decoder.
  // Invalid UTF-8 is returned as is (no U+FFFD replacement, unlike Hugging Face), so
  // Decode(Encode(s)) can give back s exactly. InvalidArgument for an id outside
  // [0, vocab_size()) or one that names no token (a gap in the id space).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     const DecodeOptions& options = {}) const;

  // max id + 1 over the vocabulary and the added tokens.
  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  bool add_bos() const { return add_bos_ && bos_id_.has_value(); }
  // From generation_config.json, else config.json, else tokenizer_config.json's eos_token.
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  // pad_token_id of generation_config.json / config.json, else tokenizer_config's pad_token.
  std::optional<int32_t> pad_id() const { return pad_id_; }

  // The id of a vocabulary or added token given by its exact string, or nullopt.
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The string of token `id` as written in tokenizer.json, or nullopt for an unknown id.
  std::optional<absl::string_view> IdToToken(int32_t id) const;
  // True for ids of added tokens marked "special".
  bool IsSpecial(int32_t id) const;

 private:
  friend class TokenDecoder;

  struct TokenInfo {
    std::string text;     // as in tokenizer.json; empty for a gap in the id space
    std::string decoded;  // the bytes Decode produces for it (before the leading-space strip)
    bool present = false;
    bool special = false;
  };

  Tokenizer() = default;
  absl::Status Build(internal::TokenizerSpec spec);
  absl::Status BuildAddedTokens(const std::vector<internal::AddedTokenSpec>& added);
  absl::Status BuildMerges(const internal::TokenizerSpec& spec);
  absl::Status BuildInitialSymbols(const internal::TokenizerSpec& spec);
  void BuildDecoded(const internal::DecoderSpec& decoder);
  absl::Status ApplySpecialTokenConfig(const internal::SpecialTokenConfig& config);
  absl::StatusOr<int32_t> RequireToken(absl::string_view token, absl::string_view what) const;

  // Encodes one stretch of text between added tokens; `at_text_start` when it begins the text.
  void EncodeSegment(absl::string_view segment, bool at_text_start,
                     std::vector<int32_t>* ids) const;
  std::vector<std::string> PreTokenize(std::string normalized, bool at_text_start) const;
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const;
  // BPE over one chunk of a pre-token (no ignore_merges check).
  void EncodeChunk(absl::string_view chunk, std::vector<int32_t>* ids) const;
  // Sets word_split_marker_ when splitting words before it cannot change the result.
  void FindWordSplitMarker();
  // Length and id of the longest added token at text[pos], or {0, -1}.
  std::pair<size_t, int32_t> MatchAddedToken(absl::string_view text, size_t pos) const;
  absl::Status CheckId(int32_t id) const;

  std::vector<internal::NormalizerStep> normalizer_;
  std::vector<internal::PreTokenizerStep> pre_tokenizer_;
  bool byte_level_ = false;     // initial symbols are the GPT-2 byte characters
  bool byte_fallback_ = false;  // unknown characters become <0xXX> tokens
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};  // byte -> byte-level token or <0xXX> token
  int strip_leading_spaces_ = 0;
  // For metaspace models with no splitting pre-tokenizer a whole text segment is one BPE word.
  // When no token contains the metaspace character preceded by another character (so no
  // merge can cross such a point), a word may be cut before each of them without changing the
  // result, which keeps BPE on short chunks. Empty when that does not hold.
  std::string word_split_marker_;

  std::vector<TokenInfo> tokens_;                          // indexed by id
  absl::flat_hash_map<std::string, int32_t> vocab_;        // model vocabulary only
  absl::flat_hash_map<std::string, int32_t> added_ids_;    // added tokens by content
  std::array<std::vector<std::pair<std::string, int32_t>>, 256> added_by_first_byte_;  // longest first
  internal::BpeMerges merges_;

  std::optional<int32_t> bos_id_;
  bool add_bos_ = false;
  std::vector<int32_t> eos_ids_;
  std::optional<int32_t> pad_id_;
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_TOKENIZER_H_
