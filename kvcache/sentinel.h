// Sentinel-token span compression, the exact rules of the paper, for checkpoints whose
// tokenizer carries the sentinel tokens "<CL>" and "<CR>".
// Paper: Ren et al., "Context Compression for Auto-regressive Transformers with Sentinel
// Tokens", EMNLP 2023, arXiv 2310.08152 (github DRSY/KV_Compression).
//
// A text span to compress is written <CL> t_1 .. t_m <CR>. The model (post-trained with
// these rules) puts what later tokens need from the span into the K/V of <CR>; afterwards
// the span tokens and <CL> are invisible to every later token, so the cache keeps one
// entry for the whole span. The rules, per query token i and earlier key token k <= i
// (every token sees itself):
//   - positions: sentinels do not advance positions: a sentinel takes the position of the
//     token before it (0 first); every other token takes the next position;
//   - an ordinary token (outside every span) sees earlier <CR> entries and ordinary tokens,
//     never span tokens or <CL>;
//   - a span token sees what an ordinary token sees plus the earlier tokens of its own span
//     (not its <CL>);
//   - a <CL> sees only itself;
//   - a <CR> sees only its own <CL>, its span and itself.
// Spans do not nest and are not empty (InvalidArgument otherwise).
//
// SentinelKvCache runs these rules as a model::KvCache (roles and positions come from
// Feed, which calls Model::Forward with explicit positions). ToSpans packs the kept
// entries (ordinary tokens and <CR>s, at their positions, log_count 0) into kvspan spans:
// a compressed span of the context is then one entry, as in the paper. For checkpoints
// without the sentinel tokens, the training-free analogue is the `sentinel-analogue`
// policy (kvcache/reducers/sentinel_analogue.h), labelled as such.
//
// Not thread-safe (the model::KvCache contract).
#ifndef KVSPAN_KVCACHE_SENTINEL_H_
#define KVSPAN_KVCACHE_SENTINEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvcache/entry_block.h"
#include "kvcache/span.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/pending_tokens.h"
#include "model/tokenizer.h"

namespace kvspan::kvcache {

struct SentinelTokens {
  int32_t cl = -1;  // "<CL>": opens a span
  int32_t cr = -1;  // "<CR>": closes it; its K/V stand for the span
};

// The ids of "<CL>" and "<CR>" when the tokenizer carries both; nullopt otherwise (use the
// sentinel-analogue policy).
std::optional<SentinelTokens> FindSentinelTokens(const model::Tokenizer& tokenizer);

enum class SentinelRole : uint8_t { kOrdinary, kOpen, kSpan, kClose };

// Roles and positions of `tokens` continuing a sequence whose next position is
// `next_position` and which has a span open when `span_open` (the state after the previous
// tokens). InvalidArgument for a nested <CL>, a <CR> with no open span, or an empty span.
struct SentinelPlan {
  std::vector<SentinelRole> roles;
  std::vector<int32_t> positions;
  int32_t next_position = 0;
  bool span_open = false;
  int32_t last_position = -1;  // position of the last token planned (-1: none yet)
  int open_span_tokens = 0;     // tokens in the open span so far
};
absl::Status PlanSentinelTokens(const SentinelTokens& sentinels, absl::Span<const int32_t> tokens,
                                SentinelPlan* plan);

class SentinelKvCache final : public model::KvCache {
 public:
  struct Options {
    int num_layers = 0;       // >= 1
    int num_heads = 0;        // a multiple of num_kv_heads
    int num_kv_heads = 0;     // >= 1
    int head_dim = 0;         // >= 1
    int capacity_tokens = 0;  // >= 1: tokens (sentinels included) the cache can take
    SentinelTokens sentinels;
  };
  // InvalidArgument for an option out of range or sentinel ids < 0 or equal.
  static absl::StatusOr<std::unique_ptr<SentinelKvCache>> Create(const Options& options);

  // Runs `tokens` through `model` with the sentinel positions and mask; logits as
  // Model::Forward writes them for `mode`. InvalidArgument from PlanSentinelTokens (nothing
  // changes) or from Forward.
  absl::Status Feed(const model::Model& model, absl::Span<const int32_t> tokens, model::LogitsMode mode,
                    std::vector<float>* logits);

  // model::KvCache. AppendAndAttend: FailedPrecondition unless called from Feed (the roles
  // of the new tokens are known); InvalidArgument for a bad layer or n; ResourceExhausted
  // past capacity. PrepareCommit: checks only (FailedPrecondition unless every layer took
  // the n tokens Feed planned); nothing to stage. Truncate drops pending tokens only
  // (committed sentinel state is kept).
  int num_tokens() const override { return num_tokens_; }
  absl::Status AppendAndAttend(int layer, const model::LayerQkv& in, float* out, ThreadPool* pool) override;
  absl::Status PrepareCommit(int n) override;
  absl::Status Commit(int n) override;
  void Truncate(int num_tokens) override;
  // K/V of every token fed (allocated for capacity_tokens at Create), the per-token roles,
  // positions and span ids, and the step in flight's plan and visibility lists.
  int64_t memory_bytes() const override;

  // The position the next ordinary token takes.
  int32_t next_position() const { return plan_.next_position; }
  bool span_open() const { return plan_.span_open; }
  // Entries the compressed cache keeps: ordinary tokens and <CR>s.
  int num_kept() const;

  // The kept entries at positions [0, floor(next_position() / S) * S) as spans of S =
  // header.geometry.span_tokens positions (span i at first_position i * S), every head one
  // block in `codec`, log_count 0; header.policy is set to "sentinel/<codec>". The
  // remaining positions are not in a full span yet. FailedPrecondition while a span is
  // open; InvalidArgument for a geometry that differs from the cache's.
  absl::StatusOr<std::vector<Span>> ToSpans(const SpanHeader& header, const CodecSpec& codec) const;

 private:
  explicit SentinelKvCache(const Options& options);
  // Indices of the keys token `i` sees (in order), from the committed and pending roles.
  void VisibleKeys(int i, std::vector<int>* keys) const;
  SentinelRole role(int i) const;

  const Options options_;
  std::vector<float> k_, v_;         // [layer][capacity][kv_heads][head_dim], every token fed
  std::vector<SentinelRole> roles_;  // committed tokens
  std::vector<int32_t> positions_;   // committed tokens
  std::vector<int> span_id_;         // committed tokens: span index of kOpen/kSpan/kClose, else -1
  SentinelPlan plan_;                // state after the committed tokens
  // Set by Feed for the step in flight.
  SentinelPlan pending_plan_;
  std::vector<int> pending_span_id_;
  std::vector<std::vector<int>> pending_visible_;  // per pending token: the keys it sees
  bool in_feed_ = false;
  int num_tokens_ = 0;
  int num_spans_ = 0;
  model::PendingTokens pending_;
};

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SENTINEL_H_
