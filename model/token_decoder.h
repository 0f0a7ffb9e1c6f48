// TokenDecoder: streaming detokenization for generation. Feed ids one at a time; each call
// returns the text completed so far that was not returned before. It holds back the bytes of
// an incomplete UTF-8 character (a character split across tokens, e.g. <0xE4><0xBD><0xA0>)
// until the next token completes it, and drops the decoder's leading space (metaspace models)
// exactly where Tokenizer::Decode does. Invariant: the concatenation of all Next() outputs and
// Finish() equals Tokenizer::Decode(all ids, same options).
//
// Not thread-safe (one decoder per sequence). The Tokenizer is borrowed and must outlive it.
#ifndef KVSPAN_MODEL_TOKEN_DECODER_H_
#define KVSPAN_MODEL_TOKEN_DECODER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"

namespace kvspan::model {

class TokenDecoder {
 public:
  // REQUIRES: tokenizer != nullptr and outlives this object.
  explicit TokenDecoder(const Tokenizer* tokenizer, const DecodeOptions& options = {});

  // Appends one id; returns the newly completed bytes (possibly empty). InvalidArgument for an
  // id Decode rejects; the decoder's state is then unchanged.
  absl::StatusOr<std::string> Next(int32_t id);

  // Returns whatever is held back (an incomplete character stays as its raw bytes) and resets
  // the decoder for a new sequence.
  std::string Finish();

 private:
  // Applies the leading-space strip once the first bytes of output exist.
  void StripAtStart();

  const Tokenizer* tokenizer_;
  DecodeOptions options_;
  std::string pending_;     // bytes not yet returned
  bool at_start_ = true;    // nothing has been produced yet (strip still to apply)
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_TOKEN_DECODER_H_
