#include "model/token_decoder.h"

#include <utility>

#include "common/status_macros.h"
#include "model/internal/unicode.h"

namespace kvspan::model {

TokenDecoder::TokenDecoder(const Tokenizer* tokenizer, const DecodeOptions& options)
    : tokenizer_(tokenizer), options_(options) {}

void TokenDecoder::StripAtStart() {
  if (!at_start_ || pending_.empty()) return;
  for (int i = 0; i < tokenizer_->strip_leading_spaces_ && !pending_.empty() &&
                  pending_[0] == ' ';
       ++i) {
    pending_.erase(0, 1);
  }
  at_start_ = false;
}

absl::StatusOr<std::string> TokenDecoder::Next(int32_t id) {
  RETURN_IF_ERROR(tokenizer_->CheckId(id));
  const Tokenizer::TokenInfo& info = tokenizer_->tokens_[id];
  if (options_.skip_special_tokens && info.special) return std::string();
  pending_ += info.decoded;
  StripAtStart();
  const size_t hold = internal::IncompleteUtf8Suffix(pending_);
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string TokenDecoder::Finish() {
  StripAtStart();
  std::string out = std::move(pending_);
  pending_.clear();
  at_start_ = true;
  return out;
}

}  // namespace kvspan::model
