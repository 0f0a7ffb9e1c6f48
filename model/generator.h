// Text generation for one prompt on one Model: chunked prefill, then token-by-token decode
// with a dense KV cache, sampling, stop tokens and stop strings, streamed text.
// This is what `kvspan generate` runs. The per-sequence state (sampling, stop rules,
// streamed text) is a GenerationState (generation_state.h), which the serving node's
// scheduler drives for many sequences over one batched Model::Forward.
#ifndef KVSPAN_MODEL_GENERATOR_H_
#define KVSPAN_MODEL_GENERATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/generation_state.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace kvspan::model {

struct GenerationResult {
  std::vector<int32_t> prompt_ids;  // bos included when the tokenizer adds one
  std::vector<int32_t> output_ids;  // generated ids; a final stop token is not included
  std::string text;                 // generated text, cut before a stop string
  FinishReason finish_reason = FinishReason::kMaxTokens;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Generates a continuation of `prompt`. `on_text` (may be empty) receives the text as it
// becomes final; the pieces concatenate to result.text. Both model and tokenizer are
// borrowed for the call.
// Errors: InvalidArgument for bad options, an empty prompt (no tokens and no bos), or a
// prompt longer than the model's context; errors of Model::Forward are passed on.
absl::StatusOr<GenerationResult> Generate(
    const Model& model, const Tokenizer& tokenizer, absl::string_view prompt,
    const GenerationOptions& options,
    absl::FunctionRef<void(absl::string_view)> on_text = [](absl::string_view) {});

// As Generate, from token ids (no tokenizer needed for the ids; the tokenizer is used only
// to produce text and match stop strings).
absl::StatusOr<GenerationResult> GenerateFromIds(
    const Model& model, const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids,
    const GenerationOptions& options,
    absl::FunctionRef<void(absl::string_view)> on_text = [](absl::string_view) {});

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_GENERATOR_H_
