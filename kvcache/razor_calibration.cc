#include "kvcache/razor_calibration.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "kvcache/razor_probe_cache.h"

namespace kvspan::kvcache {
namespace {

// SplitMix64 (Steele, Lea, Flood 2014): a tiny, platform-independent generator, so a
// seed names the same segments on every machine (std:: distributions do not promise that).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias (rejection below 2^64 mod n). REQUIRES: n >= 1.
  uint64_t Below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = Next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  uint64_t state_;
};

// The ids a segment may use: the vocabulary minus bos, eos and the excluded ids.
std::vector<int32_t> DrawableIds(const RazorCalibrationOptions& options,
                                 const model::ModelConfig& config) {
  std::vector<bool> excluded(config.vocab_size, false);
  auto exclude = [&](int32_t id) {
    if (id >= 0 && id < config.vocab_size) excluded[id] = true;
  };
  for (int32_t id : config.bos_token_ids) exclude(id);
  for (int32_t id : config.eos_token_ids) exclude(id);
  for (int32_t id : options.excluded_token_ids) exclude(id);
  std::vector<int32_t> ids;
  ids.reserve(config.vocab_size);
  for (int32_t id = 0; id < config.vocab_size; ++id) {
    if (!excluded[id]) ids.push_back(id);
  }
  return ids;
}

int SequenceTokens(const RazorCalibrationOptions& options, const model::ModelConfig& config) {
  return (config.bos_token_ids.empty() ? 0 : 1) + options.segment_tokens * options.repeats;
}

// ceil(fraction * n), robust to the rounding of e.g. 0.15 * 20 = 3.0000000000000004.
int CeilCount(double fraction, int n) {
  return std::min(n, static_cast<int>(std::ceil(fraction * n - 1e-9)));
}

// Indices of the `count` largest scores; ties to the lower index.
std::vector<int> TopIndices(absl::Span<const double> scores, int count) {
  std::vector<int> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return scores[a] > scores[b]; });
  order.resize(std::min<size_t>(order.size(), std::max(0, count)));
  return order;
}

absl::Status CheckFraction(const char* name, double value) {
  if (!std::isfinite(value) || value < 0.0 || value > 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("razor calibration: ", name, " = ", value, " is not in [0, 1]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRazorCalibrationOptions(const RazorCalibrationOptions& options) {
  if (options.num_trials < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("razor calibration: num_trials = ", options.num_trials, " < 1"));
  }
  if (options.segment_tokens < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("razor calibration: segment_tokens = ", options.segment_tokens, " < 2"));
  }
  if (options.repeats < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("razor calibration: repeats = ", options.repeats, " < 2"));
  }
  RETURN_IF_ERROR(CheckFraction("induction_fraction", options.induction_fraction));
  RETURN_IF_ERROR(CheckFraction("echo_fraction", options.echo_fraction));
  return absl::OkStatus();
}

absl::Status ValidateRazorCalibrationOptions(const RazorCalibrationOptions& options,
                                             const model::ModelConfig& config) {
  RETURN_IF_ERROR(ValidateRazorCalibrationOptions(options));
  for (int32_t id : options.excluded_token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("razor calibration: excluded token id ", id,
                                                     " outside [0, ", config.vocab_size, ")"));
    }
  }
  const size_t drawable = DrawableIds(options, config).size();
  if (drawable < static_cast<size_t>(options.segment_tokens)) {
    return absl::InvalidArgumentError(
        absl::StrCat("razor calibration: segment_tokens = ", options.segment_tokens,
                     " distinct tokens but only ", drawable, " drawable ids in the vocabulary"));
  }
  // int64: segment_tokens * repeats may overflow int for absurd flag values.
  const int64_t sequence = (config.bos_token_ids.empty() ? 0 : 1) +
                           int64_t{options.segment_tokens} * options.repeats;
  if (sequence > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "razor calibration: sequence of ", sequence, " tokens (bos + segment_tokens ",
        options.segment_tokens, " x repeats ", options.repeats,
        ") exceeds max_position_embeddings = ", config.max_position_embeddings));
  }
  return absl::OkStatus();
}

std::vector<int32_t> RazorTrialTokens(const RazorCalibrationOptions& options,
                                      const model::ModelConfig& config, int trial) {
  std::vector<int32_t> ids = DrawableIds(options, config);
  // One stream per (seed, trial): trials are independent of num_trials.
  SplitMix64 rng(SplitMix64(options.seed).Next() ^ (0xD1B54A32D192ED03ull * (trial + 1ull)));
  // Partial Fisher-Yates: the first segment_tokens ids, distinct, uniformly drawn.
  for (int i = 0; i < options.segment_tokens; ++i) {
    const size_t j = i + rng.Below(ids.size() - i);
    std::swap(ids[i], ids[j]);
  }
  std::vector<int32_t> tokens;
  tokens.reserve(SequenceTokens(options, config));
  if (!config.bos_token_ids.empty()) tokens.push_back(config.bos_token_ids.front());
  for (int r = 0; r < options.repeats; ++r) {
    tokens.insert(tokens.end(), ids.begin(), ids.begin() + options.segment_tokens);
  }
  return tokens;
}

absl::StatusOr<std::vector<double>> MaxOverGqaGroups(absl::Span<const double> per_query_head,
                                                     int num_heads, int num_kv_heads) {
  if (num_kv_heads < 1 || num_heads < num_kv_heads || num_heads % num_kv_heads != 0 ||
      per_query_head.size() % num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "razor calibration: ", per_query_head.size(), " query-head scores do not fit heads=",
        num_heads, " kv_heads=", num_kv_heads));
  }
  const int group = num_heads / num_kv_heads;
  const size_t num_layers = per_query_head.size() / num_heads;
  std::vector<double> out(num_layers * num_kv_heads);
  for (size_t l = 0; l < num_layers; ++l) {
    for (int g = 0; g < num_kv_heads; ++g) {
      const double* first = &per_query_head[l * num_heads + g * group];
      out[l * num_kv_heads + g] = *std::max_element(first, first + group);
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<int, int>>> SelectRetrievalHeads(
    absl::Span<const double> kv_echo, absl::Span<const double> kv_induction, int num_kv_heads,
    double induction_fraction, double echo_fraction) {
  if (num_kv_heads < 1 || kv_echo.empty() || kv_echo.size() != kv_induction.size() ||
      kv_echo.size() % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "razor calibration: ", kv_echo.size(), " echo and ", kv_induction.size(),
        " induction scores for kv_heads=", num_kv_heads));
  }
  RETURN_IF_ERROR(CheckFraction("induction_fraction", induction_fraction));
  RETURN_IF_ERROR(CheckFraction("echo_fraction", echo_fraction));
  const int h = static_cast<int>(kv_echo.size());
  std::vector<int> chosen = TopIndices(kv_induction, CeilCount(induction_fraction, h));
  const std::vector<int> by_echo = TopIndices(kv_echo, CeilCount(echo_fraction, h));
  chosen.insert(chosen.end(), by_echo.begin(), by_echo.end());
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  std::vector<std::pair<int, int>> heads;
  heads.reserve(chosen.size());
  for (int i : chosen) heads.emplace_back(i / num_kv_heads, i % num_kv_heads);
  return heads;
}

absl::StatusOr<RazorCalibration> CalibrateRazor(const model::Model& model,
                                                const RazorCalibrationOptions& options) {
  const model::ModelConfig& config = model.config();
  RETURN_IF_ERROR(ValidateRazorCalibrationOptions(options, config));
  RazorCalibration c;
  c.options = options;
  c.model_fingerprint = config.fingerprint;
  c.num_layers = config.num_layers;
  c.num_heads = config.num_heads;
  c.num_kv_heads = config.num_kv_heads;
  const size_t num_q_heads = static_cast<size_t>(config.num_layers) * config.num_heads;
  c.echo.assign(num_q_heads, 0.0);
  c.induction.assign(num_q_heads, 0.0);

  const int bos = config.bos_token_ids.empty() ? 0 : 1;
  const int num_tokens = SequenceTokens(options, config);
  for (int trial = 0; trial < options.num_trials; ++trial) {
    const std::vector<int32_t> tokens = RazorTrialTokens(options, config, trial);
    ASSIGN_OR_RETURN(std::unique_ptr<model::DenseKvCache> dense, model.NewDenseCache(num_tokens));
    RazorProbeCache::Options probe_options;
    probe_options.segment_tokens = options.segment_tokens;
    probe_options.first_scored_position = bos + options.segment_tokens;  // 2nd repetition
    ASSIGN_OR_RETURN(std::unique_ptr<RazorProbeCache> probe,
                     RazorProbeCache::Create(std::move(dense), std::move(probe_options)));
    std::vector<float> logits;
    model::ForwardItem item{tokens, probe.get(), model::LogitsMode::kLastToken, &logits};
    RETURN_IF_ERROR(model.Forward(absl::MakeSpan(&item, 1)));
    const std::vector<double> echo = probe->MeanEcho();
    const std::vector<double> induction = probe->MeanInduction();
    for (size_t i = 0; i < num_q_heads; ++i) {
      c.echo[i] += echo[i] / options.num_trials;
      c.induction[i] += induction[i] / options.num_trials;
    }
  }
  int64_t num_scored = 0;
  for (int p = bos + options.segment_tokens; p < num_tokens; ++p, ++num_scored) {
    const int visible = config.sliding_window > 0 ? std::min(p + 1, config.sliding_window) : p + 1;
    c.uniform_score += 1.0 / visible;
  }
  c.uniform_score /= std::max<int64_t>(1, num_scored);
  ASSIGN_OR_RETURN(c.kv_echo, MaxOverGqaGroups(c.echo, c.num_heads, c.num_kv_heads));
  ASSIGN_OR_RETURN(c.kv_induction, MaxOverGqaGroups(c.induction, c.num_heads, c.num_kv_heads));
  ASSIGN_OR_RETURN(c.retrieval_heads,
                   SelectRetrievalHeads(c.kv_echo, c.kv_induction, c.num_kv_heads,
                                        options.induction_fraction, options.echo_fraction));
  return c;
}

std::string RetrievalHeadsInline(absl::Span<const std::pair<int, int>> heads) {
  if (heads.empty()) return "none";
  return absl::StrJoin(heads, ":", [](std::string* out, const std::pair<int, int>& h) {
    absl::StrAppend(out, h.first, ".", h.second);
  });
}

std::string RetrievalHeadsFileText(const RazorCalibration& c, absl::string_view model_label) {
  const RazorCalibrationOptions& o = c.options;
  std::string text = absl::StrCat(
      "# RazorAttention retrieval heads (Tang et al., arXiv 2407.15891), one layer.kv_head per\n"
      "# line; use as razor(sinks=4,window=8,retrieval=@<this file>)/<codec>.\n"
      "# model: ", absl::StrReplaceAll(model_label, {{"\n", " "}}), " (fingerprint ",
      c.model_fingerprint, "), layers=", c.num_layers, " heads=", c.num_heads,
      " kv_heads=", c.num_kv_heads, "\n",
      "# options: trials=", o.num_trials, " segment_tokens=", o.segment_tokens,
      " repeats=", o.repeats, " induction_fraction=", o.induction_fraction,
      " echo_fraction=", o.echo_fraction, " seed=", o.seed, "\n",
      "# scores: mean attention probability of repeated-segment queries on p-L (echo) and\n"
      "# p-L+1 (induction); a KV head takes the max over its query heads. A head attending\n"
      "# uniformly would score ", absl::StrFormat("%.6f", c.uniform_score), ".\n",
      "# kv_head  induction  echo  retrieval\n");
  for (int l = 0; l < c.num_layers; ++l) {
    for (int g = 0; g < c.num_kv_heads; ++g) {
      const size_t i = static_cast<size_t>(l) * c.num_kv_heads + g;
      const bool chosen = std::binary_search(c.retrieval_heads.begin(), c.retrieval_heads.end(),
                                             std::make_pair(l, g));
      absl::StrAppendFormat(&text, "#   %d.%d  %.6f  %.6f  %s\n", l, g,
                            i < c.kv_induction.size() ? c.kv_induction[i] : 0.0,
                            i < c.kv_echo.size() ? c.kv_echo[i] : 0.0, chosen ? "yes" : "-");
    }
  }
  absl::StrAppend(&text, "# retrieval heads (", c.retrieval_heads.size(), "): ",
                  RetrievalHeadsInline(c.retrieval_heads), "\n");
  for (const auto& [layer, kv_head] : c.retrieval_heads) {
    absl::StrAppend(&text, layer, ".", kv_head, "\n");
  }
  return text;
}

absl::Status WriteRetrievalHeadsFile(const std::string& path, const RazorCalibration& calibration,
                                     absl::string_view model_label) {
  const absl::Status s = WriteFile(path, RetrievalHeadsFileText(calibration, model_label));
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("retrieval-head file: ", s.message()));
}

}  // namespace kvspan::kvcache
