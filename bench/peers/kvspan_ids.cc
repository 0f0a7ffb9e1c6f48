// kvspan's side of the output comparison with llama.cpp (bench/peers/compare_outputs.sh): the
// same flags and output lines as bench/peers/llama_ids.cc (formats: bench/peers/ids_io.h), over
// the C++ runtime (model::Model) instead of libllama.
//
//   build/bench/kvspan_ids --model models/kvspan-brown --weights f32 --ids FILE [--n-predict 32]
//                          [--threads 2] [--logits-out FILE]
//   build/bench/kvspan_ids --model models/kvspan-brown --text /tmp/brown_valid.txt --windows 4
//                          --window-tokens 1024 --ids-out FILE ...
//
// With --text the sequences are --windows windows of held-out text tokenized by the model's
// tokenizer (bos + window-tokens - 1 ids each, consecutive, as weights_quality_bench cuts
// them), written to --ids-out so that llama_ids can read the same ids. Each sequence is one
// Forward over a fresh dense cache with every token's logits, then --n-predict greedy tokens
// one Forward each (fewer where the model's context ends first).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/peers/ids_io.h"
#include "bench/text_windows.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "kernels/blas_select.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace kvspan::peers {
namespace {

struct Options {
  std::string model = "models/kvspan-brown";
  std::string ids;         // id file to read, or
  std::string text;        // held-out text to cut into windows
  int windows = 4;
  int window_tokens = 1024;
  std::string ids_out;     // where the windows' ids go
  std::string logits_out;
  int n_predict = 0;
  int threads = 2;
  model::WeightsChoice weights{model::WeightsMode::kF32};
};

absl::StatusOr<std::vector<std::vector<int32_t>>> TextWindows(const Options& o) {
  ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tok, model::Tokenizer::LoadFromDir(o.model));
  ASSIGN_OR_RETURN(auto windows, bench::TextWindows(*tok, o.text, o.windows, o.window_tokens));
  if (!o.ids_out.empty()) {
    std::string lines;
    for (const std::vector<int32_t>& win : windows) absl::StrAppend(&lines, absl::StrJoin(win, " "), "\n");
    RETURN_IF_ERROR(WriteFile(o.ids_out, lines));
  }
  return windows;
}

absl::Status Run(const Options& o) {
  std::vector<std::vector<int32_t>> seqs;
  if (!o.text.empty()) {
    ASSIGN_OR_RETURN(seqs, TextWindows(o));
  } else if (!ReadIdFile(o.ids, &seqs) || seqs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ids from --ids '", o.ids, "'"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> m,
                   model::Model::Load(o.model, {.num_threads = o.threads, .weights = o.weights}));
  const int vocab = m->config().vocab_size;
  std::FILE* logits_out = nullptr;
  if (!o.logits_out.empty() && (logits_out = std::fopen(o.logits_out.c_str(), "wb")) == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot write ", o.logits_out));
  }
  IdsReport report;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<int32_t>& ids = seqs[s];
    const int n_predict = GreedyTokens(o.n_predict, ids.size(), m->config().max_position_embeddings);
    ASSIGN_OR_RETURN(auto cache, m->NewDenseCache(static_cast<int>(ids.size()) + std::max(n_predict - 1, 0)));
    std::vector<float> logits;
    model::ForwardItem item{ids, cache.get(), model::LogitsMode::kAllTokens, &logits};
    RETURN_IF_ERROR(m->Forward(absl::MakeSpan(&item, 1)));
    double nll = 0;
    for (size_t t = 0; t + 1 < ids.size(); ++t) nll += NextTokenNll(logits.data() + t * vocab, vocab, ids[t + 1]);
    if (logits_out != nullptr) std::fwrite(logits.data(), sizeof(float), logits.size(), logits_out);
    std::vector<int32_t> greedy;
    const float* last = logits.data() + (ids.size() - 1) * vocab;
    for (int i = 0; i < n_predict; ++i) {
      if (i > 0) {
        model::ForwardItem step{absl::MakeConstSpan(&greedy.back(), 1), cache.get(), model::LogitsMode::kLastToken,
                                &logits};
        RETURN_IF_ERROR(m->Forward(absl::MakeSpan(&step, 1)));
        last = logits.data();
      }
      greedy.push_back(Argmax(last, vocab));
    }
    report.AddSequence(s, ids.size(), nll, greedy);
  }
  if (logits_out != nullptr && std::fclose(logits_out) != 0) {
    return absl::DataLossError(absl::StrCat("writing ", o.logits_out, " failed"));
  }
  report.PrintTotal();
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  Options o;
  FlagSet flags("kvspan_ids", "Logits, NLL and greedy continuations of token-id sequences (vs bench/peers/llama_ids).");
  flags.Add("model", &o.model, "model directory");
  flags.Add("ids", &o.ids, "id file: one sequence per line (bench/peers/ids_io.h)");
  flags.Add("text", &o.text, "held-out text to cut into --windows windows instead of --ids");
  flags.Add("windows", &o.windows, "windows of --text");
  flags.Add("window-tokens", &o.window_tokens, "tokens per window of --text, bos included");
  flags.Add("ids-out", &o.ids_out, "id file to write the --text windows to");
  flags.Add("logits-out", &o.logits_out, "file for every sequence's logits, [tokens, vocab] float32 each");
  flags.Add("n-predict", &o.n_predict, "greedy tokens after each sequence");
  flags.Add("threads", &o.threads, "threads for the forward pass");
  model::AddWeightsFlag(flags, &o.weights);
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  if (o.ids.empty() == o.text.empty()) {
    std::fprintf(stderr, "kvspan_ids: give one of --ids and --text\n");
    return 2;
  }
  if (absl::Status s = Run(o); !s.ok()) {
    std::fprintf(stderr, "kvspan_ids: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::peers

int main(int argc, char** argv) {
  // First: it may re-execute the process with OPENBLAS_CORETYPE set (kernels/blas_select.h).
  kvspan::kernels::SelectBlasCoreAtStartup("kvspan_ids", argv);
  kvspan::InitLogging(argv[0]);
  return kvspan::peers::Main(argc, argv);
}
