// RazorAttention's calibration pass: finds the retrieval heads of a model, the KV heads
// that the `razor(..., retrieval=<heads>)` policy keeps whole (Tang et al.,
// "RazorAttention: Efficient KV Cache Compression Through Retrieval Heads",
// arXiv 2407.15891, section 3.2).
//
// Each trial feeds the model bos (when it has one) + the same L random tokens repeated R
// times, through a RazorProbeCache (razor_probe_cache.h), and measures per query head the
// mean attention probability of the queries of the 2nd..R-th repetition on
//   p - L      (echo: the previous occurrence of the same token) and
//   p - L + 1  (induction: the token that followed the previous occurrence).
// Scores are averaged over trials. A KV head scores the max over its GQA group of query
// heads (the span format compresses per KV head). The retrieval set is the top
// ceil(induction_fraction * H) KV heads by induction score united with the top
// ceil(echo_fraction * H) by echo score, H = num_layers * num_kv_heads.
//
//   ASSIGN_OR_RETURN(RazorCalibration c, CalibrateRazor(*model, {}));
//   RETURN_IF_ERROR(WriteRetrievalHeadsFile("heads.txt", c, "models/kvspan-brown"));
//   // policy: "razor(sinks=4,window=8,retrieval=@heads.txt)/bf16"
//
// Thread safety: all functions are thread-safe (CalibrateRazor only reads the Model, whose
// Forward is thread-safe on distinct caches); the structs are value types.
#ifndef KVSPAN_KVCACHE_RAZOR_CALIBRATION_H_
#define KVSPAN_KVCACHE_RAZOR_CALIBRATION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/model.h"

namespace kvspan::kvcache {

struct RazorCalibrationOptions {
  // >= 1: independent random segments, scores averaged. 32 rather than the 8 one might
  // expect: on models/kvspan-brown, whose heads score near uniform, 8 trials still flip
  // the ranking of close heads between seeds (and a trial costs one forward pass).
  int num_trials = 32;
  int segment_tokens = 64;        // L >= 2: distinct random token ids per segment
  int repeats = 4;                // R >= 2: the segment appears R times
  double induction_fraction = 0.15;  // in [0, 1]: share of KV heads protected by induction
                                     // score (the paper protects ~15%)
  double echo_fraction = 0.05;       // in [0, 1]: share protected by echo score (~1-5%)
  uint64_t seed = 0;              // segment draws: trial t uses a stream derived from (seed, t)
  // Token ids never drawn, besides the model's bos and eos ids (e.g. the tokenizer's
  // special and pad tokens). Each in [0, vocab_size).
  std::vector<int32_t> excluded_token_ids;
};

// The checks that need no model: InvalidArgument naming the field for a count below its
// minimum or a fraction outside [0, 1] or not finite.
absl::Status ValidateRazorCalibrationOptions(const RazorCalibrationOptions& options);

// All checks for `config`: the above, and InvalidArgument for an excluded id outside the
// vocabulary, fewer than segment_tokens drawable ids, or a sequence
// (bos + segment_tokens * repeats) longer than max_position_embeddings.
absl::Status ValidateRazorCalibrationOptions(const RazorCalibrationOptions& options,
                                             const model::ModelConfig& config);

// The token sequence of trial `trial`: [bos] + segment * repeats, the segment being
// segment_tokens distinct ids drawn uniformly (seeded, platform-independent) from the
// vocabulary minus bos, eos and the excluded ids. REQUIRES: options valid for config.
std::vector<int32_t> RazorTrialTokens(const RazorCalibrationOptions& options,
                                      const model::ModelConfig& config, int trial);

struct RazorCalibration {
  RazorCalibrationOptions options;
  std::string model_fingerprint;  // ModelConfig::fingerprint
  int num_layers = 0;
  int num_heads = 0;     // query heads per layer
  int num_kv_heads = 0;  // KV heads per layer
  // Per query head, index layer * num_heads + head: mean over trials and scored queries.
  std::vector<double> echo;
  std::vector<double> induction;
  // Per KV head, index layer * num_kv_heads + kv_head: max over its GQA group.
  std::vector<double> kv_echo;
  std::vector<double> kv_induction;
  // What a head attending uniformly to its visible keys would score (echo and induction
  // alike): the mean over scored queries of 1 / visible keys. The yardstick for the scores.
  double uniform_score = 0.0;
  // The chosen retrieval heads as (layer, kv_head), sorted, no duplicates.
  std::vector<std::pair<int, int>> retrieval_heads;
};

// Runs the calibration pass on `model` (num_trials forward passes of
// 1 + segment_tokens * repeats tokens). InvalidArgument from ValidateRazorCalibrationOptions;
// otherwise the model's errors (ResourceExhausted if a cache cannot be allocated).
absl::StatusOr<RazorCalibration> CalibrateRazor(const model::Model& model,
                                                const RazorCalibrationOptions& options);

// Per KV head: the max over each group of num_heads / num_kv_heads consecutive query heads
// (query heads [g*G, (g+1)*G) read KV head g, the kernels' GQA layout).
// InvalidArgument unless num_heads is a positive multiple of num_kv_heads and
// per_query_head.size() is a multiple of num_heads.
absl::StatusOr<std::vector<double>> MaxOverGqaGroups(absl::Span<const double> per_query_head,
                                                     int num_heads, int num_kv_heads);

// The top ceil(induction_fraction * H) KV heads by induction score united with the top
// ceil(echo_fraction * H) by echo score (H = kv_echo.size()), as (layer, kv_head) pairs,
// sorted. Ties go to the lower index (layer-major). InvalidArgument for mismatched or
// empty sizes, num_kv_heads < 1, or a fraction outside [0, 1].
absl::StatusOr<std::vector<std::pair<int, int>>> SelectRetrievalHeads(
    absl::Span<const double> kv_echo, absl::Span<const double> kv_induction, int num_kv_heads,
    double induction_fraction, double echo_fraction);

// The heads as the policy's inline form: "0.1:2.0", or "none" for an empty set.
std::string RetrievalHeadsInline(absl::Span<const std::pair<int, int>> heads);

// The heads file that kvcache::ParsePolicy reads for `retrieval=@path`: a '#' header
// (paper, model label and fingerprint, options, the per-KV-head score table) and then one
// "layer.kv_head" line per retrieval head.
std::string RetrievalHeadsFileText(const RazorCalibration& calibration,
                                   absl::string_view model_label);

// Writes RetrievalHeadsFileText to `path` (replacing it). The errno-derived code (e.g.
// PermissionDenied, NotFound for a missing directory) when it cannot be written.
absl::Status WriteRetrievalHeadsFile(const std::string& path, const RazorCalibration& calibration,
                                     absl::string_view model_label);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_RAZOR_CALIBRATION_H_
