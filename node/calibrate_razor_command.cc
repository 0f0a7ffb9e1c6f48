// `kvspan calibrate-razor --model DIR --out FILE`: RazorAttention's calibration pass
// (Tang et al., arXiv 2407.15891; kvcache/razor_calibration.h). Runs repeated random
// segments through the model, prints the per-head echo/induction scores and the chosen
// retrieval heads, and writes the heads file that `razor(retrieval=@FILE)` reads.
// Exit codes: 0 done, 1 runtime error (model, tokenizer, output file), 2 usage error.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "kvcache/razor_calibration.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "node/commands.h"

namespace kvspan::node {
namespace {

constexpr char kName[] = "kvspan calibrate-razor";

// OK when `path` can be created or replaced: its directory exists and is writable, and an
// existing file is writable. Checked before the (long) pass so a typo fails at once.
absl::Status CheckWritable(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("--out ", path, " is a directory"));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("--out ", path, ": no directory ", dir));
  }
  if (::access(dir.c_str(), W_OK) != 0 ||
      (FileExists(path) && ::access(path.c_str(), W_OK) != 0)) {
    return absl::PermissionDeniedError(absl::StrCat("--out ", path, " is not writable"));
  }
  return absl::OkStatus();
}

// The tokenizer's special ids (added tokens marked special, bos, eos, pad) inside the
// model's vocabulary, so the random segments are ordinary text tokens.
absl::StatusOr<std::vector<int32_t>> SpecialTokenIds(const std::string& model_dir,
                                                     int32_t vocab_size) {
  std::vector<int32_t> ids;
  if (!FileExists(model_dir + "/tokenizer.json")) return ids;
  absl::StatusOr<std::unique_ptr<model::Tokenizer>> tokenizer =
      model::Tokenizer::LoadFromDir(model_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  const model::Tokenizer& t = **tokenizer;
  auto add = [&](int32_t id) {
    if (id >= 0 && id < vocab_size) ids.push_back(id);
  };
  for (int32_t id = 0; id < std::min(vocab_size, t.vocab_size()); ++id) {
    if (t.IsSpecial(id)) add(id);
  }
  if (t.bos_id()) add(*t.bos_id());
  if (t.pad_id()) add(*t.pad_id());
  for (int32_t id : t.eos_ids()) add(id);
  return ids;
}

void PrintTables(const kvcache::RazorCalibration& c) {
  std::printf("\nquery heads (mean attention of repeated-segment queries on p-L+1 / p-L;\n"
              "uniform attention would score %.4f)\n", c.uniform_score);
  std::printf("layer  head  kv_head  induction      echo\n");
  const int group = c.num_heads / c.num_kv_heads;
  for (int l = 0; l < c.num_layers; ++l) {
    for (int h = 0; h < c.num_heads; ++h) {
      const size_t i = static_cast<size_t>(l) * c.num_heads + h;
      std::printf("%5d  %4d  %7d  %9.4f  %8.4f\n", l, h, h / group, c.induction[i], c.echo[i]);
    }
  }
  std::printf("\nKV heads (max over the GQA group)\n");
  std::printf("kv_head  induction      echo  retrieval\n");
  for (int l = 0; l < c.num_layers; ++l) {
    for (int g = 0; g < c.num_kv_heads; ++g) {
      const size_t i = static_cast<size_t>(l) * c.num_kv_heads + g;
      const bool chosen = std::binary_search(c.retrieval_heads.begin(), c.retrieval_heads.end(),
                                             std::make_pair(l, g));
      std::printf("%5d.%-2d  %9.4f  %8.4f  %s\n", l, g, c.kv_induction[i], c.kv_echo[i],
                  chosen ? "yes" : "-");
    }
  }
}

}  // namespace

int RunCalibrateRazor(int argc, const char* const* argv) {
  std::string model_dir;
  std::string out_path;
  kvcache::RazorCalibrationOptions options;
  int64_t seed = 0;
  int threads = 0;
  model::WeightsChoice weights;
  FlagSet flags(kName,
                "RazorAttention calibration (arXiv 2407.15891): finds the retrieval heads of "
                "--model from its attention on repeated random tokens (echo and induction "
                "scores) and writes them to --out, one layer.kv_head per line, for the policy "
                "razor(retrieval=@FILE).");
  flags.Add("model", &model_dir, "model directory (config.json, *.safetensors; required)");
  flags.Add("out", &out_path, "heads file to write (required)");
  flags.Add("trials", &options.num_trials, "random segments; scores are averaged over them");
  flags.Add("segment-tokens", &options.segment_tokens, "L: distinct random tokens per segment");
  flags.Add("repeats", &options.repeats, "R: times the segment repeats (queries of 2..R score)");
  flags.Add("induction-fraction", &options.induction_fraction,
            "share of KV heads kept whole by induction score (top ceil(F * layers * kv_heads))");
  flags.Add("echo-fraction", &options.echo_fraction, "share of KV heads kept whole by echo score");
  flags.Add("seed", &seed, "seed of the random segments (>= 0)");
  flags.Add("threads", &threads, "CPU threads; 0 = all cores");
  model::AddWeightsFlag(flags, &weights);
  const absl::Status parsed = flags.Parse(argc, argv);
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return 0;
  }
  std::string usage_error;
  if (!parsed.ok()) {
    usage_error = std::string(parsed.message());
  } else if (model_dir.empty()) {
    usage_error = "--model is required";
  } else if (out_path.empty()) {
    usage_error = "--out is required";
  } else if (seed < 0) {
    usage_error = absl::StrCat("--seed = ", seed, " < 0");
  } else if (threads < 0) {
    usage_error = absl::StrCat("--threads = ", threads, " < 0");
  } else if (absl::Status s = kvcache::ValidateRazorCalibrationOptions(options); !s.ok()) {
    usage_error = std::string(s.message());
  }
  if (!usage_error.empty()) {
    std::fprintf(stderr, "%s: %s\n\n%s", kName, usage_error.c_str(), flags.Usage().c_str());
    return 2;
  }
  options.seed = static_cast<uint64_t>(seed);
  if (absl::Status s = CheckWritable(out_path); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, std::string(s.message()).c_str());
    return 1;
  }

  auto model = model::Model::Load(model_dir, {.num_threads = threads, .weights = weights});
  if (!model.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, model.status().ToString().c_str());
    return 1;
  }
  const model::ModelConfig& config = (*model)->config();
  absl::StatusOr<std::vector<int32_t>> special = SpecialTokenIds(model_dir, config.vocab_size);
  if (!special.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, special.status().ToString().c_str());
    return 1;
  }
  options.excluded_token_ids = *special;
  if (absl::Status s = kvcache::ValidateRazorCalibrationOptions(options, config); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, std::string(s.message()).c_str());
    return 2;  // a flag value this model cannot take (e.g. a sequence past its context)
  }

  std::printf("%s: %s (%d layers, %d heads, %d KV heads), %d trials of %s%d tokens x %d\n", kName,
              model_dir.c_str(), config.num_layers, config.num_heads, config.num_kv_heads,
              options.num_trials, config.bos_token_ids.empty() ? "" : "bos + ",
              options.segment_tokens, options.repeats);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<kvcache::RazorCalibration> c = kvcache::CalibrateRazor(**model, options);
  if (!c.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, c.status().ToString().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  PrintTables(*c);
  const std::string heads = kvcache::RetrievalHeadsInline(c->retrieval_heads);
  std::printf("\nretrieval heads (%zu of %d): %s\n", c->retrieval_heads.size(),
              c->num_layers * c->num_kv_heads, heads.c_str());
  if (absl::Status s = kvcache::WriteRetrievalHeadsFile(out_path, *c, model_dir); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s; use razor(sinks=4,window=8,retrieval=@%s)/bf16\n", out_path.c_str(),
              out_path.c_str());
  std::fprintf(stderr, "[%s: %.1f s]\n", kName, seconds);
  return 0;
}

}  // namespace kvspan::node
