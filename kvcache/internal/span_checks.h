// Span invariants, shared by ValidateSpan (InvalidArgument) and ParseSpan (DataLoss).
#ifndef KVSPAN_KVCACHE_INTERNAL_SPAN_CHECKS_H_
#define KVSPAN_KVCACHE_INTERNAL_SPAN_CHECKS_H_

#include "absl/status/status.h"
#include "kvcache/span.h"

namespace kvspan::kvcache::internal {

// Relative slack on sum(exp(log_count)) <= S: log/exp rounding of merged counts.
inline constexpr double kCountSlack = 1e-4;

// Returns a status with `code` describing the first violated invariant (span.h), or OK.
absl::Status CheckHeader(const SpanHeader& header, absl::StatusCode code);
absl::Status CheckSpan(const Span& span, absl::StatusCode code);

// InvalidArgument "<who>: null K/V or bad strides" unless `kv` can be read for geometry `g`
// (non-null keys and values, token stride >= head_dim, non-negative head / layer strides).
absl::Status CheckDenseView(const SpanGeometry& g, const DenseKvView& kv, const char* who);

}  // namespace kvspan::kvcache::internal

#endif  // KVSPAN_KVCACHE_INTERNAL_SPAN_CHECKS_H_
