#include "kvcache/compress.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvcache/internal/span_checks.h"
#include "kvcache/reducers/entries.h"
#include "kvcache/reducers/expected_attention.h"
#include "kvcache/reducers/key_norm.h"
#include "kvcache/reducers/kvmerger.h"
#include "kvcache/reducers/mikv.h"
#include "kvcache/reducers/razor.h"
#include "kvcache/reducers/sentinel_analogue.h"
#include "kvcache/reducers/sinks_window.h"
#include "kvcache/reducers/snapkv.h"
#include "kvcache/sharing.h"

namespace kvspan::kvcache {
namespace {

using reducers::QueryRows;
using reducers::ReducedEntries;
using reducers::SpanContext;
using reducers::TokenRows;

CodecSpec SpecFor(Codec codec, int group_size) {
  return CodecSpec{codec, IsQuantized(codec) ? group_size : 0};
}

absl::Status CheckQueries(const Policy& policy, const SpanGeometry& g, const DenseQueryView* queries) {
  const QueryNeeds needs = QueryNeedsOf(policy);
  if (!needs.any()) return absl::OkStatus();
  const std::string name = policy.main_reducer()->name;
  if (queries == nullptr || queries->q == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CompressSpan: policy reducer '", name, "' reads queries and none were given",
        needs.observation_tokens > 0 ? " (query-aware: it runs decode-side only)" : ""));
  }
  const int want = g.span_tokens + needs.observation_tokens;
  if (queries->num_tokens < want) {
    return absl::FailedPreconditionError(absl::StrCat("CompressSpan: '", name, "' needs ", want,
                                                      " query tokens, got ", queries->num_tokens));
  }
  if (queries->num_heads < g.num_kv_heads || queries->num_heads % g.num_kv_heads != 0 ||
      queries->token_stride < int64_t{queries->num_heads} * g.head_dim || queries->layer_stride < 0) {
    return absl::InvalidArgumentError(absl::StrCat("CompressSpan: bad query view (", queries->num_heads,
                                                   " heads for ", g.num_kv_heads, " KV heads, or bad strides)"));
  }
  if (!queries->rope_inv_freq.empty() &&
      (g.head_dim % 2 != 0 || static_cast<int>(queries->rope_inv_freq.size()) != g.head_dim / 2)) {
    return absl::InvalidArgumentError(absl::StrCat("CompressSpan: ", queries->rope_inv_freq.size(),
                                                   " RoPE frequencies for head_dim ", g.head_dim));
  }
  return absl::OkStatus();
}

absl::Status CheckSupported(const Policy& policy, const SpanGeometry& g) {
  const PolicyStage* main = policy.main_reducer();
  if (main != nullptr && main->name == "sentinel") {
    return absl::FailedPreconditionError(
        "CompressSpan: 'sentinel' (the exact sentinel-token method) runs inside the forward pass of a checkpoint "
        "that carries <CL>/<CR> (kvcache/sentinel.h), not on a dense span; use sentinel-analogue otherwise");
  }
  if (policy.sharing.has_value() && (!policy.reducers.empty() || policy.codec.name == "mikv")) {
    // Sharing pairs token t of one layer with token t of another: it needs every token
    // of every layer, in one block codec (kvcache/README.md "Cross-layer sharing").
    return absl::InvalidArgumentError(absl::StrCat(
        "CompressSpan: sharing '", policy.sharing->name,
        "' composes only with a codec-only policy (no token reducers, not mikv): '",
        policy.ToString(), "'"));
  }
  if (main != nullptr && main->name == "razor") {
    for (const auto& [layer, head] : main->Get("retrieval").heads) {
      if (layer >= g.num_layers || head >= g.num_kv_heads) {
        return absl::InvalidArgumentError(absl::StrCat(
            "CompressSpan: retrieval head ", layer, ".", head, " outside the geometry (",
            g.num_layers, " layers, ", g.num_kv_heads, " KV heads)"));
      }
    }
  }
  return absl::OkStatus();
}

// Queries of tokens [first, first + count) for the GQA group of `kv_head`, copied
// contiguous [count, group, D].
struct GroupQueries {
  std::vector<int32_t> positions;
  std::vector<float> q;
  QueryRows rows(int head_dim, int group) const { return QueryRows{head_dim, group, positions, q}; }
};
GroupQueries CopyGroupQueries(const DenseQueryView& v, const SpanGeometry& g, int32_t first_position, int layer,
                              int kv_head, int first, int count) {
  const int group = v.num_heads / g.num_kv_heads;
  GroupQueries out;
  out.q.resize(static_cast<size_t>(count) * group * g.head_dim);
  for (int j = 0; j < count; ++j) {
    out.positions.push_back(first_position + first + j);
    const float* src = v.q + layer * v.layer_stride + (first + j) * v.token_stride +
                       int64_t{kv_head} * group * g.head_dim;
    std::copy_n(src, group * g.head_dim, out.q.data() + static_cast<size_t>(j) * group * g.head_dim);
  }
  return out;
}

// The main reducer applied to the candidates of head (layer, kv_head).
ReducedEntries ApplyMain(const PolicyStage& main, const SpanContext& ctx, int layer, int kv_head,
                         const TokenRows& rows, const SpanGeometry& g, const DenseQueryView* queries,
                         const reducers::ExpectedAttentionRope* rope) {
  if (main.name == "snapkv" || main.name == "expected-attn") {
    const int group = queries->num_heads / g.num_kv_heads;
    if (main.name == "snapkv") {
      const int obs = static_cast<int>(main.Number("obs"));
      const GroupQueries q =
          CopyGroupQueries(*queries, g, ctx.first_position, layer, kv_head, queries->num_tokens - obs, obs);
      return reducers::SnapKvReduce({main.Number("keep"), static_cast<int>(main.Number("pool"))},
                                    q.rows(g.head_dim, group), rows);
    }
    const GroupQueries q = CopyGroupQueries(*queries, g, ctx.first_position, layer, kv_head, 0, g.span_tokens);
    return reducers::ExpectedAttentionReduce({main.Number("keep"), rope}, q.rows(g.head_dim, group), rows);
  }
  if (main.name == "keynorm") return reducers::KeyNormReduce(rows, main.Number("keep"));
  if (main.name == "kvmerger") {
    return reducers::KvMergerReduce({main.Number("sim"), main.Number("sigma")}, rows);
  }
  if (main.name == "sentinel-analogue") {
    return reducers::SentinelAnalogueReduce(static_cast<int>(main.Number("k")), rows);
  }
  // razor (CheckSupported rejected the rest).
  const auto& heads = main.Get("retrieval").heads;
  const bool retrieval =
      std::binary_search(heads.begin(), heads.end(), std::make_pair(layer, kv_head));
  return reducers::RazorReduce(
      {static_cast<int>(main.Number("sinks")), static_cast<int>(main.Number("window"))}, ctx,
      retrieval ? reducers::HeadRole::kRetrieval : reducers::HeadRole::kOther, rows);
}

}  // namespace

QueryNeeds QueryNeedsOf(const Policy& policy) {
  QueryNeeds needs;
  const PolicyStage* main = policy.main_reducer();
  if (main == nullptr) return needs;
  if (main->name == "expected-attn") needs.own = true;
  if (main->name == "snapkv") needs.observation_tokens = static_cast<int>(main->Number("obs"));
  return needs;
}

std::vector<int> ProtectedTokens(const Policy& policy, int32_t first_position, int span_tokens) {
  std::vector<int> kept;
  const SpanContext ctx{first_position, span_tokens};
  const PolicyStage* sinks = policy.FindReducer("sinks");
  const PolicyStage* window = policy.FindReducer("window");
  const reducers::SinksWindowOptions protect{sinks ? static_cast<int>(sinks->Number("n")) : 0,
                                             window ? static_cast<int>(window->Number("n")) : 0};
  for (int t = 0; t < span_tokens; ++t) {
    if (policy.reducers.empty() || reducers::InSinksOrWindow(protect, ctx, first_position + t)) kept.push_back(t);
  }
  return kept;
}

absl::StatusOr<Span> CompressSpan(const Policy& policy, const SpanHeader& header,
                                  const DenseKvView& kv, const DenseQueryView* queries) {
  RETURN_IF_ERROR(internal::CheckHeader(header, absl::StatusCode::kInvalidArgument));
  const SpanGeometry& g = header.geometry;
  RETURN_IF_ERROR(internal::CheckDenseView(g, kv, "CompressSpan"));
  Span span;
  span.header = header;
  span.header.policy = policy.ToString();
  // A hand-built Policy may lack parameters or name unknown stages: accept only what the
  // parser would produce, so every PolicyStage::Get below is defined.
  absl::StatusOr<Policy> reparsed = ParsePolicy(span.header.policy);
  if (!reparsed.ok() || !(*reparsed == policy)) {
    return absl::InvalidArgumentError(absl::StrCat("CompressSpan: policy '", span.header.policy,
                                                   "' is not one ParsePolicy produces"));
  }
  if (span.header.policy.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(absl::StrCat("CompressSpan: canonical policy is ",
                                                   span.header.policy.size(), " bytes > ",
                                                   kMaxLabelBytes));
  }
  RETURN_IF_ERROR(CheckSupported(policy, g));
  RETURN_IF_ERROR(CheckQueries(policy, g, queries));
  if (policy.sharing.has_value()) {
    ASSIGN_OR_RETURN(Codec codec, CodecByName(policy.codec.name));
    const CodecSpec spec =
        SpecFor(codec, IsQuantized(codec) ? static_cast<int>(policy.codec.Number("g")) : 0);
    const PolicyStage& sharing = *policy.sharing;
    if (sharing.name == "minicache") {
      const MiniCacheOptions options{sharing.Number("from"), sharing.Number("t"),
                                     sharing.Number("retain")};
      ASSIGN_OR_RETURN(span.heads, MiniCacheHeads(options, spec, header, kv));
    } else {
      const PodOptions options{sharing.Number("from"), static_cast<int>(sharing.Number("group")),
                               static_cast<int>(sharing.Number("sinks")),
                               static_cast<int>(sharing.Number("window"))};
      ASSIGN_OR_RETURN(span.heads, PodHeads(options, spec, header, kv));
    }
    RETURN_IF_ERROR(ValidateSpan(span));
    return span;
  }
  const SpanContext ctx{header.first_position, g.span_tokens};
  // Which tokens are kept verbatim: the same for every head (and what the GPU cache's
  // device encoder gathers, gpu/gpu_kv_cache.h).
  std::vector<uint8_t> is_kept(g.span_tokens, 0);
  for (const int t : ProtectedTokens(policy, header.first_position, g.span_tokens)) is_kept[t] = 1;
  const PolicyStage* main = policy.main_reducer();
  // expected-attn's RoPE tables depend on the span's positions only: once per span.
  reducers::ExpectedAttentionRope rope;
  if (QueryNeedsOf(policy).own) {
    std::vector<int32_t> query_positions(g.span_tokens);
    for (int t = 0; t < g.span_tokens; ++t) query_positions[t] = header.first_position + t;
    rope = reducers::MakeExpectedAttentionRope(queries->rope_inv_freq, query_positions,
                                               header.first_position + g.span_tokens,
                                               static_cast<int>(main->Number("future")));
  }

  span.heads.resize(g.num_heads_total());
  for (int l = 0; l < g.num_layers; ++l) {
    for (int h = 0; h < g.num_kv_heads; ++h) {
      ReducedEntries kept;  // protected (or all) tokens
      kept.head_dim = g.head_dim;
      ReducedEntries candidates;
      candidates.head_dim = g.head_dim;
      const int64_t base = l * kv.layer_stride + h * kv.head_stride;
      for (int t = 0; t < g.span_tokens; ++t) {  // tokens [0, S) only: causality
        const int32_t position = header.first_position + t;
        const float* key = kv.keys + base + t * kv.token_stride;
        const float* value = kv.values + base + t * kv.token_stride;
        (is_kept[t] ? kept : candidates).Append(position, 0.0f, key, value);
      }
      if (main != nullptr && candidates.size() > 0) {
        const TokenRows rows{g.head_dim, candidates.positions, candidates.keys, candidates.values};
        ReducedEntries reduced = ApplyMain(*main, ctx, l, h, rows, g, queries, &rope);
        for (int i = 0; i < reduced.size(); ++i) {
          kept.Append(reduced.positions[i], reduced.log_counts[i],
                      reduced.keys.data() + static_cast<size_t>(i) * g.head_dim,
                      reduced.values.data() + static_cast<size_t>(i) * g.head_dim);
        }
        kept.SortByPosition();
      }
      HeadEntries& head = span.head(l, h);
      if (policy.codec.name == "mikv") {
        MixedPrecisionSpec spec;
        const int group = static_cast<int>(policy.codec.Number("g"));
        ASSIGN_OR_RETURN(Codec hi, CodecByName(policy.codec.Get("hi").text));
        ASSIGN_OR_RETURN(Codec lo, CodecByName(policy.codec.Get("lo").text));
        spec.high = SpecFor(hi, group);
        spec.low = SpecFor(lo, group);
        const std::vector<uint8_t> important =
            reducers::MikvImportance(kept, policy.codec.Number("keep_hi"));
        ASSIGN_OR_RETURN(head, EncodeMixedHead(spec, kept.view(), important));
      } else {
        ASSIGN_OR_RETURN(Codec codec, CodecByName(policy.codec.name));
        const int group = IsQuantized(codec) ? static_cast<int>(policy.codec.Number("g")) : 0;
        ASSIGN_OR_RETURN(EntryBlock block, EncodeBlock(SpecFor(codec, group), kept.view()));
        head.blocks.push_back(std::move(block));
      }
    }
  }
  RETURN_IF_ERROR(ValidateSpan(span));
  return span;
}

}  // namespace kvspan::kvcache
