// make_random_model: writes a random-weight Hugging Face checkpoint of a named shape, for
// benchmarks and tests that need a full-size model without shipping one.
//   make_random_model --shape llama-3.2-1b --out /tmp/llama1b --dtype bf16 [--shards 2] [--seed 1]
//                     [--tokenizer-from models/kvspan-brown]
// Shapes: see model/testing/random_checkpoint.h (NamedShape). The output is not committed.
// --tokenizer-from copies that model's tokenizer.json, its vocabulary padded with tokens
// "<extra_ID>" up to the shape's vocab_size, so that `kvspan serve` can run the random
// model (token-id prompts; generated ids beyond the real vocabulary decode as "<extra_ID>").
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "model/safetensors.h"
#include "model/testing/random_checkpoint.h"

namespace {

// `from_dir`'s tokenizer.json, its model vocabulary padded to `vocab_size`. NotFound for a
// missing file; InvalidArgument when it is malformed or already has more ids than `vocab_size`.
absl::StatusOr<std::string> PaddedTokenizer(const std::string& from_dir, int vocab_size) {
  ASSIGN_OR_RETURN(std::string text, kvspan::ReadFile(from_dir + "/tokenizer.json"));
  nlohmann::json tokenizer = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (tokenizer.is_discarded() || !tokenizer.contains("model") || !tokenizer["model"].contains("vocab") ||
      !tokenizer["model"]["vocab"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(from_dir, "/tokenizer.json has no model.vocab object"));
  }
  nlohmann::json& vocab = tokenizer["model"]["vocab"];
  int next = 0;
  for (const auto& [token, id] : vocab.items()) next = std::max(next, id.get<int>() + 1);
  for (const auto& added : tokenizer.value("added_tokens", nlohmann::json::array())) {
    next = std::max(next, added.value("id", 0) + 1);
  }
  if (next > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer of ", from_dir, " has ", next,
                                                   " ids, more than the shape's vocab_size ", vocab_size));
  }
  for (int id = next; id < vocab_size; ++id) vocab[absl::StrCat("<extra_", id, ">")] = id;
  return tokenizer.dump();
}

int Run(int argc, const char* const* argv) {
  std::string shape = "llama-3.2-1b";
  std::string out;
  std::string dtype = "bf16";
  int shards = 1;
  int64_t seed = 1;
  std::string tokenizer_from;
  kvspan::FlagSet flags("make_random_model", "Writes a random-weight HF checkpoint (config.json, safetensors).");
  flags.Add("shape", &shape, "llama-3.2-1b | tiny-llama | tiny-mistral | tiny-qwen2");
  flags.Add("out", &out, "output directory (created)");
  flags.Add("dtype", &dtype, "f32 | f16 | bf16");
  flags.Add("shards", &shards, "number of safetensors shards (> 1 writes an index)");
  flags.Add("seed", &seed, "random seed");
  flags.Add("tokenizer-from", &tokenizer_from,
            "model directory whose tokenizer.json to copy, padded to the shape's vocabulary");
  if (absl::Status s = flags.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n%s", std::string(s.message()).c_str(), flags.Usage().c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (out.empty()) {
    std::fprintf(stderr, "--out is required\n%s", flags.Usage().c_str());
    return 2;
  }
  absl::StatusOr<kvspan::model::testing::RandomCheckpointOptions> options = kvspan::model::testing::NamedShape(shape);
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", options.status().ToString().c_str());
    return 2;
  }
  if (dtype == "f32") {
    options->dtype = kvspan::model::DType::kF32;
  } else if (dtype == "f16") {
    options->dtype = kvspan::model::DType::kF16;
  } else if (dtype == "bf16") {
    options->dtype = kvspan::model::DType::kBF16;
  } else {
    std::fprintf(stderr, "--dtype must be f32, f16 or bf16, not %s\n", dtype.c_str());
    return 2;
  }
  options->num_shards = shards;
  std::string tokenizer;
  if (!tokenizer_from.empty()) {
    // Made before the weights are written: a bad tokenizer fails in a second, not a minute.
    absl::StatusOr<std::string> padded = PaddedTokenizer(tokenizer_from, options->vocab_size);
    if (!padded.ok()) {
      std::fprintf(stderr, "--tokenizer-from: %s\n", std::string(padded.status().message()).c_str());
      return 2;
    }
    tokenizer = *std::move(padded);
  }
  options->seed = static_cast<uint64_t>(seed);
  if (absl::Status s = kvspan::model::testing::WriteRandomCheckpoint(out, *options); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  if (!tokenizer.empty()) {
    if (absl::Status s = kvspan::WriteFile(out + "/tokenizer.json", tokenizer); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("wrote %s (%s, %s, %d shard(s))\n", out.c_str(), shape.c_str(), dtype.c_str(), shards);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
