#include "transport/sequence_checks.h"

#include "absl/strings/str_cat.h"

namespace kvspan::transport {

absl::Status CheckPeer(const model::ModelConfig& config, int span_tokens, const std::string& peer_fingerprint,
                       int peer_span_tokens) {
  if (peer_fingerprint != config.fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat("the caller runs model \"", peer_fingerprint,
                                                      "\", this worker \"", config.fingerprint, "\""));
  }
  if (peer_span_tokens != span_tokens) {
    return absl::FailedPreconditionError(
        absl::StrCat("the caller uses spans of ", peer_span_tokens, " tokens, this worker ", span_tokens));
  }
  return absl::OkStatus();
}

absl::Status CheckTokens(const model::ModelConfig& config, absl::Span<const int32_t> tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("the sequence has no tokens");
  if (static_cast<int64_t>(tokens.size()) > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("the sequence has ", tokens.size(),
                                                   " tokens, more than the model's context of ",
                                                   config.max_position_embeddings));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvspan::transport
