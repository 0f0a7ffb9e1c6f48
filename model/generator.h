// Text generation for one prompt on one Model: chunked prefill, then token-by-token decode
// with a dense KV cache, sampling, stop tokens and stop strings, streamed text.
// This is what `kvspan generate` runs; serving adds batching across requests on top of
// the same Model::Forward.
#ifndef KVSPAN_MODEL_GENERATOR_H_
#define KVSPAN_MODEL_GENERATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

namespace kvspan::model {

struct GenerationOptions {
  SamplingOptions sampling;
  // Tokens to generate at most (stop tokens excluded from the count's output, not its budget).
  int max_tokens = 128;
  // Generation ends before the first occurrence of any of these in the text.
  std::vector<std::string> stop_strings;
  // Generation ends at any of these ids (in addition to the model's eos ids).
  std::vector<int32_t> stop_token_ids;
  // When true, the model's eos ids do not end generation (benchmarks, reference checks).
  bool ignore_eos = false;
  // Prompt tokens per prefill step; long prompts are prefilled in chunks of this size.
  int prefill_chunk_tokens = 512;
};

enum class FinishReason {
  kStopToken,    // a stop token or eos was sampled
  kStopString,   // a stop string appeared in the text
  kMaxTokens,    // max_tokens were generated
  kContextFull,  // the model's context (max_position_embeddings) is full
};
const char* FinishReasonName(FinishReason reason);

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
