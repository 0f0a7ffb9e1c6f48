// The checks both worker services run on a sequence that arrives from another role, before
// any work: the same model and span length on both sides, and tokens the model can take.
#ifndef KVSPAN_TRANSPORT_SEQUENCE_CHECKS_H_
#define KVSPAN_TRANSPORT_SEQUENCE_CHECKS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "model/config.h"

namespace kvspan::transport {

// FailedPrecondition when the caller runs another model (fingerprint) or span length S than
// this worker (a misconfigured cluster, never a request's fault).
absl::Status CheckPeer(const model::ModelConfig& config, int span_tokens, const std::string& peer_fingerprint,
                       int peer_span_tokens);

// InvalidArgument for no tokens, a token id outside the vocabulary, or more tokens than the
// model's context.
absl::Status CheckTokens(const model::ModelConfig& config, absl::Span<const int32_t> tokens);

}  // namespace kvspan::transport

#endif  // KVSPAN_TRANSPORT_SEQUENCE_CHECKS_H_
