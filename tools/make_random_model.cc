// make_random_model: writes a random-weight Hugging Face checkpoint of a named shape, for
// benchmarks and tests that need a full-size model without shipping one.
//   make_random_model --shape llama-3.2-1b --out /tmp/llama1b --dtype bf16 [--shards 2] [--seed 1]
// Shapes: see model/testing/random_checkpoint.h (NamedShape). The output is not committed.
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "model/safetensors.h"
#include "model/testing/random_checkpoint.h"

namespace {

int Run(int argc, const char* const* argv) {
  std::string shape = "llama-3.2-1b";
  std::string out;
  std::string dtype = "bf16";
  int shards = 1;
  int64_t seed = 1;
  kvspan::FlagSet flags("make_random_model", "Writes a random-weight HF checkpoint (config.json, safetensors).");
  flags.Add("shape", &shape, "llama-3.2-1b | tiny-llama | tiny-mistral | tiny-qwen2");
  flags.Add("out", &out, "output directory (created)");
  flags.Add("dtype", &dtype, "f32 | f16 | bf16");
  flags.Add("shards", &shards, "number of safetensors shards (> 1 writes an index)");
  flags.Add("seed", &seed, "random seed");
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
  options->seed = static_cast<uint64_t>(seed);
  if (absl::Status s = kvspan::model::testing::WriteRandomCheckpoint(out, *options); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s (%s, %s, %d shard(s))\n", out.c_str(), shape.c_str(), dtype.c_str(), shards);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
