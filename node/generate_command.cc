// `kvspan generate`: loads a model and streams a continuation of --prompt to stdout.
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/flags.h"
#include "model/generator.h"
#include "model/model.h"
#include "model/token_decoder.h"
#include "model/tokenizer.h"
#include "node/commands.h"

namespace kvspan::node {

int RunGenerate(int argc, const char* const* argv) {
  std::string model_dir = "models/kvspan-brown";
  std::string prompt;
  int max_tokens = 64;
  double temperature = 0.7;
  int top_k = 0;
  double top_p = 1.0;
  int64_t seed = 0;
  int threads = 0;
  std::vector<std::string> stops;
  bool print_token_ids = false;
  bool ignore_eos = false;
  model::ModelOptions model_options;

  FlagSet flags("kvspan generate",
                "Generates a continuation of --prompt with the model in --model, streamed to "
                "stdout. Statistics go to stderr.");
  flags.Add("model", &model_dir, "model directory (config.json, *.safetensors, tokenizer.json)");
  flags.Add("prompt", &prompt, "the prompt text");
  flags.Add("max-tokens", &max_tokens, "tokens to generate at most");
  flags.Add("temperature", &temperature, "sampling temperature; 0 is greedy");
  flags.Add("top-k", &top_k, "sample among the k most likely tokens; 0 = all");
  flags.Add("top-p", &top_p, "sample from the smallest set of tokens with this much probability");
  flags.Add("seed", &seed, "random seed for sampling");
  flags.Add("stop", &stops, "stop string (repeatable); the text ends before it");
  flags.Add("ignore-eos", &ignore_eos, "keep generating past end-of-sequence tokens");
  flags.Add("threads", &threads, "CPU threads; 0 = all cores");
  model::AddWeightsFlag(flags, &model_options.weights);
  flags.Add("print-token-ids", &print_token_ids,
            "print the generated token ids, space-separated, as the last line");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;

  model_options.num_threads = threads;
  auto model = model::Model::Load(model_dir, model_options);
  if (!model.ok()) {
    std::fprintf(stderr, "kvspan generate: %s\n", model.status().ToString().c_str());
    return 1;
  }
  auto tokenizer = model::Tokenizer::LoadFromDir(model_dir);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "kvspan generate: %s\n", tokenizer.status().ToString().c_str());
    return 1;
  }

  model::GenerationOptions options;
  options.sampling.temperature = temperature;
  options.sampling.top_k = top_k;
  options.sampling.top_p = top_p;
  options.sampling.seed = static_cast<uint64_t>(seed);
  options.max_tokens = max_tokens;
  options.stop_strings = stops;
  options.ignore_eos = ignore_eos;

  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  auto result = model::Generate(**model, **tokenizer, prompt, options, [](absl::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  if (!result.ok()) {
    std::fprintf(stderr, "kvspan generate: %s\n", result.status().ToString().c_str());
    return 1;
  }
  const size_t num_out = result->output_ids.size();
  std::fprintf(stderr,
               "[%zu prompt tokens, prefill %.1f tok/s; %zu generated, decode %.1f tok/s; "
               "finish: %s]\n",
               result->prompt_ids.size(),
               result->prompt_ids.size() / std::max(1e-9, result->prefill_seconds), num_out,
               num_out > 1 ? (num_out - 1) / std::max(1e-9, result->decode_seconds) : 0.0,
               model::FinishReasonName(result->finish_reason));
  if (print_token_ids) {
    std::printf("%s\n", absl::StrJoin(result->output_ids, " ").c_str());
  }
  return 0;
}

}  // namespace kvspan::node
