// An independent, straightforward forward pass for tests: plain loops in double
// precision over the checkpoint's own tensors (HF names, unfused), written from the
// transformers modeling code for Llama / Mistral / Qwen2 without sharing anything with
// Model or kernels/ beyond reading the files. Slow; for tiny models only.
#ifndef KVSPAN_MODEL_TESTING_REFERENCE_FORWARD_H_
#define KVSPAN_MODEL_TESTING_REFERENCE_FORWARD_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvspan::model::testing {

// Logits [tokens.size(), vocab_size] (row-major) of the sequence `tokens` at positions
// 0 .. tokens.size() - 1, for the checkpoint in `dir`. Errors as Model::Load.
absl::StatusOr<std::vector<double>> ReferenceForward(const std::string& dir, absl::Span<const int32_t> tokens);

// The same with explicit RoPE positions ([tokens.size()]) and an attention mask: query i
// attends to key j iff j <= i and visible(i, j) (and the sliding window allows it).
absl::StatusOr<std::vector<double>> ReferenceForward(const std::string& dir, absl::Span<const int32_t> tokens,
                                                     absl::Span<const int32_t> positions,
                                                     const std::function<bool(int, int)>& visible);

}  // namespace kvspan::model::testing

#endif  // KVSPAN_MODEL_TESTING_REFERENCE_FORWARD_H_
