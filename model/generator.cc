#include "model/generator.h"

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "common/status_macros.h"

namespace kvspan::model {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<GenerationResult> Generate(const Model& model, const Tokenizer& tokenizer,
                                          absl::string_view prompt,
                                          const GenerationOptions& options,
                                          absl::FunctionRef<void(absl::string_view)> on_text) {
  return GenerateFromIds(model, tokenizer, tokenizer.EncodeForGeneration(prompt), options, on_text);
}

absl::StatusOr<GenerationResult> GenerateFromIds(
    const Model& model, const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids,
    const GenerationOptions& options, absl::FunctionRef<void(absl::string_view)> on_text) {
  const int num_prompt = static_cast<int>(std::min<size_t>(prompt_ids.size(), INT32_MAX));
  ASSIGN_OR_RETURN(GenerationState state,
                   GenerationState::Create(options, &tokenizer, model.config(), num_prompt));
  const int capacity = std::min<int64_t>(model.config().max_position_embeddings,
                                         int64_t{num_prompt} + options.max_tokens);
  ASSIGN_OR_RETURN(std::unique_ptr<DenseKvCache> cache, model.NewDenseCache(capacity));

  GenerationResult result;
  result.prompt_ids = std::move(prompt_ids);
  std::vector<float> logits;

  // Prefill in chunks; only the last chunk's last token needs logits.
  const auto prefill_start = std::chrono::steady_clock::now();
  for (int begin = 0; begin < num_prompt; begin += options.prefill_chunk_tokens) {
    const int n = std::min(options.prefill_chunk_tokens, num_prompt - begin);
    ForwardItem item{absl::MakeConstSpan(result.prompt_ids).subspan(begin, n), cache.get(),
                     LogitsMode::kLastToken, &logits};
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
  }
  result.prefill_seconds = SecondsSince(prefill_start);

  const auto decode_start = std::chrono::steady_clock::now();
  while (!state.finished()) {
    ASSIGN_OR_RETURN(StepResult step, state.Step(logits));
    if (!step.text.empty()) on_text(step.text);
    if (step.finished) break;
    ForwardItem item{absl::MakeConstSpan(&step.token_id, 1), cache.get(), LogitsMode::kLastToken, &logits};
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
  }
  result.output_ids = state.output_ids();
  result.text = state.text();
  result.finish_reason = state.finish_reason();
  result.decode_seconds = SecondsSince(decode_start);
  return result;
}

}  // namespace kvspan::model
