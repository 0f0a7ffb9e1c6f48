// Consistency checks of an EntryBlock, shared by ValidateBlock (InvalidArgument for a
// caller's block) and ParseSpan (DataLoss for a stored one). Pure; thread-safe.
#ifndef KVSPAN_KVCACHE_INTERNAL_BLOCK_CHECKS_H_
#define KVSPAN_KVCACHE_INTERNAL_BLOCK_CHECKS_H_

#include "absl/status/status.h"
#include "kvcache/entry_block.h"

namespace kvspan::kvcache::internal {

// Returns a status with `code` describing the first inconsistency of `block`, or OK.
// Checks: known codec, group size rule, head_dim range, every vector's size against the
// layout, non-decreasing positions, finite log counts >= +0.0 (no -0.0), finite bf16/fp16
// values, finite params with scale >= 0, zero padding bits in packed rows; sharing: a mode
// exactly when source_layer != kNotShared (then >= 0), no own key codes when shared, no
// own value codes with kKeysAndValues, scales empty or [n] finite fp16 >= +0 and not all
// 1, value scales only with kKeysAndValues. Cross-block rules are span_checks.h's.
absl::Status CheckBlock(const EntryBlock& block, absl::StatusCode code);

}  // namespace kvspan::kvcache::internal

#endif  // KVSPAN_KVCACHE_INTERNAL_BLOCK_CHECKS_H_
