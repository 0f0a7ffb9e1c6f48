// Quality of the weight formats (issue 14): each --weights mode of one model against the
// checkpoint's own dtype (WeightsMode::kAuto, the reference), teacher-forced over held-out
// windows: perplexity, mean KL(reference || format) of the next-token distributions, and
// top-1 agreement. Writes the section weights_quality of docs/quality.md.
//
//   xz -dc tools/corpus/brown_valid.txt.xz > /tmp/brown_valid.txt
//   build/bench/weights_quality_bench --model models/kvspan-brown --text /tmp/brown_valid.txt
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/doc_section.h"
#include "bench/text_windows.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/cpu_features.h"
#include "kernels/blas_select.h"
#include "kernels/cpu_isa.h"
#include "kernels/weight_matrix.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace kvspan::bench {
namespace {

struct Options {
  std::string model = "models/kvspan-brown";
  std::string text;
  int windows = 4;
  int window_tokens = 1024;
  int threads = 2;
  std::string out = "docs/quality.md";
};

// log-softmax of one row of logits, in double.
std::vector<double> LogSoftmax(const float* logits, int n) {
  const double max = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(logits[i] - max);
  const double log_sum = max + std::log(sum);
  std::vector<double> out(n);
  for (int i = 0; i < n; ++i) out[i] = logits[i] - log_sum;
  return out;
}

// All-token logits of each window, one Forward step per window.
absl::StatusOr<std::vector<std::vector<float>>> WindowLogits(const model::Model& m,
                                                             const std::vector<std::vector<int32_t>>& windows) {
  std::vector<std::vector<float>> out;
  for (const std::vector<int32_t>& w : windows) {
    ASSIGN_OR_RETURN(auto cache, m.NewDenseCache(static_cast<int>(w.size())));
    std::vector<float> logits;
    model::ForwardItem item{w, cache.get(), model::LogitsMode::kAllTokens, &logits};
    RETURN_IF_ERROR(m.Forward(absl::MakeSpan(&item, 1)));
    out.push_back(std::move(logits));
  }
  return out;
}

struct Row {
  std::string weights;
  int64_t weight_bytes = 0;
  double ppl = 0;
  double kl_mean = 0;
  double top1_agree = 0;
  int64_t positions = 0;
};

absl::Status Run(const Options& o, const std::string& command) {
  ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tok, model::Tokenizer::LoadFromDir(o.model));
  ASSIGN_OR_RETURN(const std::vector<std::vector<int32_t>> windows, TextWindows(*tok, o.text, o.windows, o.window_tokens));

  std::vector<std::vector<float>> reference;
  std::string reference_name;
  std::vector<Row> rows;
  int vocab = 0;
  // Each weight format with the exact kernels of this process (the reference's), and bf16
  // also through vdpbf16ps with x rounded to bf16 (kAvx512Bf16Dot, ggml's arithmetic for bf16
  // weights) where the CPU has it.
  struct Choice {
    model::WeightsChoice weights;
    std::optional<kernels::CpuIsa> isa = std::nullopt;
  };
  std::vector<Choice> choices = {{{model::WeightsMode::kAuto}},  {{model::WeightsMode::kF32}},
                                 {{model::WeightsMode::kBF16}},  {{model::WeightsMode::kInt8}},
                                 {{model::WeightsMode::kInt4, 32}}, {{model::WeightsMode::kInt4, 128}}};
  const bool exact_reference = kernels::SelectedCpuIsa().isa != kernels::CpuIsa::kAvx512Bf16Dot;
  if (exact_reference && kernels::CpuSupportsIsa(DetectCpuFeatures(), kernels::CpuIsa::kAvx512Bf16Dot)) {
    choices.push_back({{model::WeightsMode::kBF16}, kernels::CpuIsa::kAvx512Bf16Dot});
  }
  for (const Choice& choice : choices) {
    const model::WeightsMode mode = choice.weights.mode;
    ASSIGN_OR_RETURN(std::unique_ptr<model::Model> m,
                     model::Model::Load(o.model, {.num_threads = o.threads, .weights = choice.weights, .cpu_isa = choice.isa}));
    vocab = m->config().vocab_size;
    std::string name = m->weight_format_label();
    if (choice.isa.has_value()) {
      absl::StrAppend(&name, ", x as bf16 (", kernels::CpuIsaName(*choice.isa), ")");
    } else if (mode != model::WeightsMode::kAuto && name == reference_name) {
      continue;  // the reference again
    }
    ASSIGN_OR_RETURN(std::vector<std::vector<float>> logits, WindowLogits(*m, windows));
    if (mode == model::WeightsMode::kAuto) {
      reference = logits;
      reference_name = name;
    }
    Row row{name, m->weight_bytes()};
    double nll = 0, kl = 0;
    int64_t positions = 0, agree = 0;
    for (size_t w = 0; w < windows.size(); ++w) {
      for (size_t t = 0; t + 1 < windows[w].size(); ++t) {
        const float* test_row = logits[w].data() + t * vocab;
        const float* ref_row = reference[w].data() + t * vocab;
        const std::vector<double> lp = LogSoftmax(test_row, vocab), lq = LogSoftmax(ref_row, vocab);
        nll -= lp[windows[w][t + 1]];
        for (int v = 0; v < vocab; ++v) kl += std::exp(lq[v]) * (lq[v] - lp[v]);
        agree += std::max_element(test_row, test_row + vocab) - test_row ==
                 std::max_element(ref_row, ref_row + vocab) - ref_row;
        ++positions;
      }
    }
    row.ppl = std::exp(nll / positions);
    row.kl_mean = kl / positions;
    row.top1_agree = static_cast<double>(agree) / positions;
    row.positions = positions;
    std::fprintf(stderr, "%s: ppl %.4f, KL %.3g, top-1 %.4f over %ld positions\n", name.c_str(), row.ppl,
                 row.kl_mean, row.top1_agree, static_cast<long>(positions));
    rows.push_back(row);
  }

  std::string md = absl::StrFormat(
      "## Weight formats (issue 14): %s\n\n"
      "Measured by `%s`: %d held-out windows of %d tokens (bos + %d), teacher-forced in one forward step "
      "each (all-token logits), every next-token prediction scored (%ld positions: not the policy table's "
      "positions, whose perplexity counts a different set); every format against the checkpoint's own dtype "
      "(%s, the reference: `--weights auto`), all with the %s matrix kernels unless the row names others. "
      "Machine load average %s.\n\n"
      "| weights | weights read per step (MB) | ppl | ppl Δ %% | KL mean vs %s | top-1 agree vs %s |\n"
      "|---|---:|---:|---:|---:|---:|\n",
      o.model, command, o.windows, o.window_tokens, o.window_tokens - 1, static_cast<long>(rows[0].positions), reference_name,
      kernels::CpuIsaName(kernels::SelectedCpuIsa().isa), LoadAverage(),
      reference_name, reference_name);
  for (const Row& r : rows) {
    absl::StrAppendFormat(&md, "| %s%s | %.2f | %.4f | %+.2f | %.3g | %.4f |\n", r.weights,
                          r.weights == reference_name ? " (reference)" : "", r.weight_bytes / 1e6, r.ppl,
                          100.0 * (r.ppl / rows[0].ppl - 1.0), r.kl_mean, r.top1_agree);
  }
  absl::StrAppend(&md,
                  "\nint8 is per output channel (a symmetric fp32 scale per matrix row) with activations quantized "
                  "per token row at run time (docs/performance.md, \"Weight formats\"); int4-gG is group-wise "
                  "(an fp16 scale per G weights of a row, codes in [-7, 7]; --weights int4 --weights-group G) "
                  "with the same activations; f32 and bf16 of a bf16 "
                  "checkpoint hold the same values, so they differ from the reference only by fp32 summation "
                  "order. \"x as bf16\": the same bf16 weights with every activation row rounded to bf16 before "
                  "vdpbf16ps (KVSPAN_CPU_ISA=avx512-bf16dot, opt-in; ggml's arithmetic for bf16 weights).\n");
  std::fputs(md.c_str(), stdout);
  if (!o.out.empty()) RETURN_IF_ERROR(WriteDocSection(o.out, "weights_quality", md));
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  Options o;
  FlagSet flags("weights_quality_bench", "Perplexity, KL and top-1 agreement of each weight format vs the checkpoint's dtype.");
  flags.Add("model", &o.model, "model directory");
  flags.Add("text", &o.text, "held-out text file (xz -dc tools/corpus/brown_valid.txt.xz)");
  flags.Add("windows", &o.windows, "evaluation windows");
  flags.Add("window-tokens", &o.window_tokens, "tokens per window, bos included");
  flags.Add("threads", &o.threads, "threads for the forward pass");
  flags.Add("out", &o.out, "Markdown file whose weights_quality section is rewritten; empty = none");
  if (std::optional<int> code = flags.ParseOrExitCode(argc, argv)) return *code;
  if (o.text.empty() || o.windows < 1 || o.window_tokens < 2) {
    std::fprintf(stderr, "weights_quality_bench: --text is required; --windows >= 1, --window-tokens >= 2\n");
    return 2;
  }
  if (absl::Status s = Run(o, CommandLine(argc, argv)); !s.ok()) {
    std::fprintf(stderr, "weights_quality_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvspan::bench

int main(int argc, char** argv) {
  kvspan::kernels::SelectBlasCoreAtStartup("weights_quality_bench", argv);
  kvspan::InitLogging(argv[0]);
  return kvspan::bench::Main(argc, argv);
}
