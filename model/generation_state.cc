#include "model/generation_state.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvspan::model {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kMaxTokens: return "max_tokens";
    case FinishReason::kContextFull: return "context_full";
  }
  return "unknown";
}

absl::StatusOr<GenerationState> GenerationState::Create(const GenerationOptions& o, const Tokenizer* tokenizer,
                                                        const ModelConfig& config, int num_prompt_tokens) {
  RETURN_IF_ERROR(ValidateSamplingOptions(o.sampling));
  if (o.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ", o.max_tokens));
  }
  if (o.prefill_chunk_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk_tokens must be >= 1, got ", o.prefill_chunk_tokens));
  }
  const int context = config.max_position_embeddings;
  if (num_prompt_tokens <= 0) return absl::InvalidArgumentError("the prompt has no tokens");
  if (num_prompt_tokens > context) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", num_prompt_tokens,
                                                   " tokens, more than the model's context of ", context));
  }
  std::vector<int32_t> stop_ids = o.stop_token_ids;
  if (!o.ignore_eos) {
    for (int32_t id : tokenizer->eos_ids()) stop_ids.push_back(id);
    for (int32_t id : config.eos_token_ids) stop_ids.push_back(id);
  }
  ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(o.sampling));
  return GenerationState(o, tokenizer, std::move(stop_ids), std::move(sampler), context, num_prompt_tokens);
}

GenerationState::GenerationState(const GenerationOptions& options, const Tokenizer* tokenizer,
                                 std::vector<int32_t> stop_ids, Sampler sampler, int context_tokens,
                                 int num_prompt_tokens)
    : max_tokens_(options.max_tokens),
      context_tokens_(context_tokens),
      num_prompt_tokens_(num_prompt_tokens),
      stop_ids_(std::move(stop_ids)),
      sampler_(std::move(sampler)),
      decoder_(tokenizer),
      filter_(options.stop_strings),
      finished_(options.max_tokens == 0) {}

absl::StatusOr<StepResult> GenerationState::Step(absl::Span<const float> logits) {
  if (finished_) return absl::FailedPreconditionError("GenerationState::Step after the sequence finished");
  return Accept(sampler_.Sample(logits));
}

absl::StatusOr<StepResult> GenerationState::Accept(int32_t token_id) {
  if (finished_) return absl::FailedPreconditionError("GenerationState::Accept after the sequence finished");
  StepResult step;
  step.token_id = token_id;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), step.token_id) != stop_ids_.end()) {
    FinishWith(FinishReason::kStopToken, &step);
    return step;
  }
  ASSIGN_OR_RETURN(std::string piece, decoder_.Next(step.token_id));
  step.in_output = true;
  output_ids_.push_back(step.token_id);
  step.text = filter_.Push(piece);
  const int num_output = static_cast<int>(output_ids_.size());
  if (filter_.stopped()) {
    FinishWith(FinishReason::kStopString, &step);
  } else if (num_output == max_tokens_) {
    FinishWith(FinishReason::kMaxTokens, &step);  // no logits needed after the last token
  } else if (int64_t{num_prompt_tokens_} + num_output > context_tokens_) {
    FinishWith(FinishReason::kContextFull, &step);  // the token's position would be past the context
  }
  return step;
}

void GenerationState::FinishWith(FinishReason reason, StepResult* step) {
  finished_ = true;
  finish_reason_ = reason;
  step->finished = true;
  step->finish_reason = reason;
  if (!filter_.stopped()) step->text += filter_.Push(decoder_.Finish()) + filter_.Flush();
}

}  // namespace kvspan::model
