#include "model/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/stop_strings.h"
#include "model/token_decoder.h"

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

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

absl::Status ValidateOptions(const GenerationOptions& o) {
  RETURN_IF_ERROR(ValidateSamplingOptions(o.sampling));
  if (o.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ", o.max_tokens));
  }
  if (o.prefill_chunk_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk_tokens must be >= 1, got ", o.prefill_chunk_tokens));
  }
  return absl::OkStatus();
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
  RETURN_IF_ERROR(ValidateOptions(options));
  const ModelConfig& config = model.config();
  const int context = config.max_position_embeddings;
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (static_cast<int>(prompt_ids.size()) > context) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_ids.size(),
                                                   " tokens, more than the model's context of ",
                                                   context));
  }
  std::vector<int32_t> stop_ids = options.stop_token_ids;
  if (!options.ignore_eos) {
    for (int32_t id : tokenizer.eos_ids()) stop_ids.push_back(id);
    for (int32_t id : config.eos_token_ids) stop_ids.push_back(id);
  }
  auto is_stop = [&stop_ids](int32_t id) {
    return std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end();
  };

  ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(options.sampling));
  const int capacity =
      std::min<int64_t>(context, static_cast<int64_t>(prompt_ids.size()) + options.max_tokens);
  ASSIGN_OR_RETURN(std::unique_ptr<DenseKvCache> cache, model.NewDenseCache(capacity));

  GenerationResult result;
  result.prompt_ids = std::move(prompt_ids);
  std::vector<float> logits;

  // Prefill in chunks; only the last chunk's last token needs logits.
  const auto prefill_start = std::chrono::steady_clock::now();
  const int num_prompt = static_cast<int>(result.prompt_ids.size());
  for (int begin = 0; begin < num_prompt; begin += options.prefill_chunk_tokens) {
    const int n = std::min(options.prefill_chunk_tokens, num_prompt - begin);
    ForwardItem item{absl::MakeConstSpan(result.prompt_ids).subspan(begin, n), cache.get(),
                     LogitsMode::kLastToken, &logits};
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
  }
  result.prefill_seconds = SecondsSince(prefill_start);

  const auto decode_start = std::chrono::steady_clock::now();
  TokenDecoder decoder(&tokenizer);
  StopStringFilter filter(options.stop_strings);
  result.finish_reason = FinishReason::kMaxTokens;
  for (int step = 0; step < options.max_tokens; ++step) {
    const int32_t id = sampler.Sample(logits);
    if (is_stop(id)) {
      result.finish_reason = FinishReason::kStopToken;
      break;
    }
    result.output_ids.push_back(id);
    ASSIGN_OR_RETURN(std::string piece, decoder.Next(id));
    const std::string shown = filter.Push(piece);
    if (!shown.empty()) on_text(shown);
    if (filter.stopped()) {
      result.finish_reason = FinishReason::kStopString;
      break;
    }
    if (step + 1 == options.max_tokens) break;  // no logits needed after the last token
    if (cache->num_tokens() >= context) {
      result.finish_reason = FinishReason::kContextFull;
      break;
    }
    ForwardItem item{absl::MakeConstSpan(&result.output_ids.back(), 1), cache.get(),
                     LogitsMode::kLastToken, &logits};
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
  }
  if (!filter.stopped()) {
    const std::string rest = filter.Push(decoder.Finish()) + filter.Flush();
    if (!rest.empty()) on_text(rest);
  }
  result.text = filter.shown();
  result.decode_seconds = SecondsSince(decode_start);
  return result;
}

}  // namespace kvspan::model
