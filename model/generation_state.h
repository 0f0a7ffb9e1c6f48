// GenerationState: the per-sequence state of text generation, apart from the model and
// its KV cache: the sampler, the stop token ids (eos included unless ignore_eos), the
// stop-string filter, the streaming TokenDecoder, the max_tokens and context-full
// bookkeeping, and the output ids and text. `kvspan generate` (GenerateFromIds,
// generator.h) and the serving node's scheduler, which owns many sequences and calls
// Model::Forward itself, run the same code through it:
//
//   ASSIGN_OR_RETURN(GenerationState state, GenerationState::Create(options, &tokenizer,
//                                                                   model.config(), prompt.size()));
//   ... prefill the prompt; `logits` = the last prompt token's logits ...
//   while (!state.finished()) {
//     ASSIGN_OR_RETURN(StepResult step, state.Step(logits));
//     stream(step.text);                         // may be empty
//     if (step.finished) break;                  // no forward needed after the last token
//     ... Forward {step.token_id} through the sequence's cache; `logits` = its logits ...
//   }
//
// Text contract: every StepResult's text is the text that became final with that step;
// the step that finishes the sequence (any reason) also carries the remaining text (the
// decoder's held-back bytes and the stop filter's held-back text, unless a stop string
// ended it), so there is no separate Finish call. The pieces concatenated equal text().
// A state created with max_tokens == 0 is finished at once (kMaxTokens) and has no text.
//
// Not thread-safe (one state per sequence). Movable. The tokenizer is borrowed and must
// outlive the state.
#ifndef KVSPAN_MODEL_GENERATION_STATE_H_
#define KVSPAN_MODEL_GENERATION_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/config.h"
#include "model/sampler.h"
#include "model/stop_strings.h"
#include "model/token_decoder.h"
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

// What one Step sampled and what it means for the sequence.
struct StepResult {
  int32_t token_id = 0;     // the sampled token
  bool in_output = false;   // false for a stop token (not in output_ids, not fed to the model)
  std::string text;         // text that became final with this step; may be empty
  bool finished = false;    // the sequence ended with this step
  FinishReason finish_reason = FinishReason::kMaxTokens;  // meaningful when finished
};

class GenerationState {
 public:
  // Validates the request and builds the sampler. `config` gives the context length
  // (max_position_embeddings) and eos ids; `num_prompt_tokens` the prompt's length, bos
  // included. InvalidArgument (with these messages) for options out of range
  // (ValidateSamplingOptions; "max_tokens must be >= 0, got N"; "prefill_chunk_tokens must
  // be >= 1, got N"), "the prompt has no tokens", or "the prompt has N tokens, more than
  // the model's context of C". REQUIRES: tokenizer != nullptr, outliving the state.
  static absl::StatusOr<GenerationState> Create(const GenerationOptions& options, const Tokenizer* tokenizer,
                                                const ModelConfig& config, int num_prompt_tokens);

  // Samples one token from `logits` (the logits of the last token fed: the last prompt
  // token, then the last token Step returned) and applies the finish rules, in this order:
  //   a stop token or eos         -> finished, kStopToken; the token is not in the output;
  //   a stop string in the text   -> finished, kStopString; the text ends before it;
  //   max_tokens output tokens    -> finished, kMaxTokens;
  //   prompt + output tokens > max_position_embeddings (no position left to feed the
  //   token at)                   -> finished, kContextFull.
  // Otherwise the caller feeds token_id to the model and calls Step with the new logits.
  // FailedPrecondition once finished; InvalidArgument for a token id the tokenizer cannot
  // decode (the state is then unchanged but for the sampler's random stream).
  // REQUIRES: !logits.empty().
  absl::StatusOr<StepResult> Step(absl::Span<const float> logits);

  // Step for a token sampled elsewhere (on a GPU, from the same options and random stream:
  // sampler()): the finish rules and errors of Step, without sampling.
  absl::StatusOr<StepResult> Accept(int32_t token_id);
  // The sequence's sampler (its options and random stream), for sampling elsewhere.
  Sampler& sampler() { return sampler_; }

  // Generated ids; a final stop token is not included.
  const std::vector<int32_t>& output_ids() const { return output_ids_; }
  // Generated text so far, cut before a stop string: the concatenated StepResult texts.
  const std::string& text() const { return filter_.shown(); }
  bool finished() const { return finished_; }
  // Why the sequence ended. REQUIRES: finished().
  FinishReason finish_reason() const { return finish_reason_; }

 private:
  GenerationState(const GenerationOptions& options, const Tokenizer* tokenizer, std::vector<int32_t> stop_ids,
                  Sampler sampler, int context_tokens, int num_prompt_tokens);
  // Ends the sequence; appends the held-back text to `step` unless a stop string ended it.
  void FinishWith(FinishReason reason, StepResult* step);

  int max_tokens_ = 0;
  int context_tokens_ = 0;       // max_position_embeddings
  int num_prompt_tokens_ = 0;
  std::vector<int32_t> stop_ids_;
  Sampler sampler_;
  TokenDecoder decoder_;
  StopStringFilter filter_;
  std::vector<int32_t> output_ids_;
  bool finished_ = false;
  FinishReason finish_reason_ = FinishReason::kMaxTokens;
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_GENERATION_STATE_H_
