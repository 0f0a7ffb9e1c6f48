#include "kvcache/sentinel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/memory_bytes.h"
#include "common/status_macros.h"
#include "kernels/span_attention.h"

namespace kvspan::kvcache {

std::optional<SentinelTokens> FindSentinelTokens(const model::Tokenizer& tokenizer) {
  const std::optional<int32_t> cl = tokenizer.TokenToId("<CL>");
  const std::optional<int32_t> cr = tokenizer.TokenToId("<CR>");
  if (!cl.has_value() || !cr.has_value()) return std::nullopt;
  return SentinelTokens{*cl, *cr};
}

absl::Status PlanSentinelTokens(const SentinelTokens& sentinels, absl::Span<const int32_t> tokens,
                                SentinelPlan* plan) {
  SentinelPlan next = *plan;
  next.roles.clear();
  next.positions.clear();
  for (size_t j = 0; j < tokens.size(); ++j) {
    const int32_t t = tokens[j];
    SentinelRole role;
    if (t == sentinels.cl) {
      if (next.span_open) return absl::InvalidArgumentError(absl::StrCat("sentinel: nested <CL> at token ", j));
      role = SentinelRole::kOpen;
      next.span_open = true;
      next.open_span_tokens = 0;
    } else if (t == sentinels.cr) {
      if (!next.span_open) {
        return absl::InvalidArgumentError(absl::StrCat("sentinel: <CR> at token ", j, " closes no open span"));
      }
      if (next.open_span_tokens == 0) {
        return absl::InvalidArgumentError(absl::StrCat("sentinel: empty span closed at token ", j));
      }
      role = SentinelRole::kClose;
      next.span_open = false;
    } else {
      role = next.span_open ? SentinelRole::kSpan : SentinelRole::kOrdinary;
      if (next.span_open) ++next.open_span_tokens;
    }
    int32_t position;
    if (role == SentinelRole::kOpen || role == SentinelRole::kClose) {
      position = std::max<int32_t>(next.last_position, 0);  // sentinels do not advance positions
    } else {
      position = next.next_position++;
    }
    next.last_position = position;
    next.roles.push_back(role);
    next.positions.push_back(position);
  }
  *plan = std::move(next);
  return absl::OkStatus();
}

SentinelKvCache::SentinelKvCache(const Options& options)
    : options_(options),
      k_(static_cast<size_t>(options.num_layers) * options.capacity_tokens * options.num_kv_heads * options.head_dim),
      v_(k_.size()),
      pending_(options.num_layers) {}

absl::StatusOr<std::unique_ptr<SentinelKvCache>> SentinelKvCache::Create(const Options& o) {
  if (o.num_layers < 1 || o.num_kv_heads < 1 || o.head_dim < 1 || o.capacity_tokens < 1 ||
      o.num_heads < o.num_kv_heads || o.num_heads % o.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("SentinelKvCache: bad geometry (layers=", o.num_layers,
                                                   " heads=", o.num_heads, " kv_heads=", o.num_kv_heads,
                                                   " head_dim=", o.head_dim, " capacity=", o.capacity_tokens, ")"));
  }
  if (o.sentinels.cl < 0 || o.sentinels.cr < 0 || o.sentinels.cl == o.sentinels.cr) {
    return absl::InvalidArgumentError(absl::StrCat("SentinelKvCache: sentinel ids <CL>=", o.sentinels.cl,
                                                   " <CR>=", o.sentinels.cr));
  }
  return std::unique_ptr<SentinelKvCache>(new SentinelKvCache(o));
}

absl::Status SentinelKvCache::Feed(const model::Model& model, absl::Span<const int32_t> tokens,
                                   model::LogitsMode mode, std::vector<float>* logits) {
  SentinelPlan plan = plan_;
  RETURN_IF_ERROR(PlanSentinelTokens(options_.sentinels, tokens, &plan));
  pending_span_id_.clear();
  int span = num_spans_;
  for (SentinelRole r : plan.roles) {
    pending_span_id_.push_back(r == SentinelRole::kOrdinary ? -1 : span);
    if (r == SentinelRole::kClose) ++span;
  }
  pending_plan_ = std::move(plan);
  // Who sees whom depends on roles only, not on the layer: once per step.
  pending_visible_.resize(tokens.size());
  for (size_t j = 0; j < tokens.size(); ++j) VisibleKeys(num_tokens_ + static_cast<int>(j), &pending_visible_[j]);
  in_feed_ = true;
  model::ForwardItem item{tokens, this, mode, logits};
  item.positions = pending_plan_.positions;
  const absl::Status status = model.Forward(absl::MakeSpan(&item, 1));
  in_feed_ = false;
  return status;
}

SentinelRole SentinelKvCache::role(int i) const {
  return i < num_tokens_ ? roles_[i] : pending_plan_.roles[i - num_tokens_];
}

void SentinelKvCache::VisibleKeys(int i, std::vector<int>* keys) const {
  auto span_of = [&](int t) { return t < num_tokens_ ? span_id_[t] : pending_span_id_[t - num_tokens_]; };
  keys->clear();
  const SentinelRole r = role(i);
  if (r == SentinelRole::kOpen) {
    keys->push_back(i);
    return;
  }
  const int span = span_of(i);
  for (int k = 0; k <= i; ++k) {
    const SentinelRole rk = role(k);
    bool visible;
    if (k == i) {
      visible = true;
    } else if (r == SentinelRole::kClose) {  // own <CL>, own span
      visible = span_of(k) == span;
    } else {  // ordinary or span token
      visible = rk == SentinelRole::kOrdinary || rk == SentinelRole::kClose ||
                (r == SentinelRole::kSpan && rk == SentinelRole::kSpan && span_of(k) == span);
    }
    if (visible) keys->push_back(k);
  }
}

absl::Status SentinelKvCache::AppendAndAttend(int layer, const model::LayerQkv& in, float* out, ThreadPool*) {
  if (!in_feed_) {
    return absl::FailedPreconditionError("SentinelKvCache: tokens must come through Feed (their roles are needed)");
  }
  if (layer < 0 || layer >= options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("SentinelKvCache: layer ", layer, " out of range"));
  }
  const int n = in.num_new;
  if (n < 1 || n != static_cast<int>(pending_plan_.roles.size())) {
    return absl::InvalidArgumentError(absl::StrCat("SentinelKvCache: num_new = ", n, " for ",
                                                   pending_plan_.roles.size(), " planned tokens"));
  }
  if (n > options_.capacity_tokens - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat("SentinelKvCache: ", num_tokens_, " + ", n,
                                                     " tokens exceed the capacity of ", options_.capacity_tokens));
  }
  const int hd = options_.head_dim, kv_heads = options_.num_kv_heads;
  const int group = options_.num_heads / kv_heads;
  const int64_t row = int64_t{kv_heads} * hd;
  float* k_layer = &k_[static_cast<size_t>(layer) * options_.capacity_tokens * row];
  float* v_layer = &v_[static_cast<size_t>(layer) * options_.capacity_tokens * row];
  for (int j = 0; j < n; ++j) {
    std::memcpy(k_layer + (num_tokens_ + j) * row, in.k + j * in.row_stride, sizeof(float) * row);
    std::memcpy(v_layer + (num_tokens_ + j) * row, in.v + j * in.row_stride, sizeof(float) * row);
  }
  pending_.Append(layer, n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> gk, gv, m(group), s(group), o(int64_t{group} * hd);
  for (int j = 0; j < n; ++j) {
    const std::vector<int>& keys = pending_visible_[j];
    const int nk = static_cast<int>(keys.size());
    gk.resize(nk * row);
    gv.resize(nk * row);
    for (int t = 0; t < nk; ++t) {
      std::memcpy(&gk[t * row], k_layer + keys[t] * row, sizeof(float) * row);
      std::memcpy(&gv[t * row], v_layer + keys[t] * row, sizeof(float) * row);
    }
    for (int g = 0; g < kv_heads; ++g) {
      kernels::PartialState state{m.data(), s.data(), o.data()};
      kernels::InitPartial(state, group, hd);
      kernels::DensePartialParams p;
      p.q = in.q + j * in.row_stride + int64_t{g} * group * hd;
      p.q_row_stride = in.row_stride;
      p.num_q = 1;
      p.group = group;
      p.head_dim = hd;
      p.k = gk.data() + g * hd;
      p.k_token_stride = row;
      p.v = gv.data() + g * hd;
      p.v_token_stride = row;
      p.num_keys = nk;
      p.q_start = nk - 1;  // the query sees every gathered key
      p.scale = scale;
      p.state = state;
      kernels::DenseAttentionPartial(p, nullptr);
      kernels::FinishPartial(state, 1, group, hd, out + j * int64_t{options_.num_heads} * hd + int64_t{g} * group * hd,
                             int64_t{options_.num_heads} * hd);
    }
  }
  return absl::OkStatus();
}

absl::Status SentinelKvCache::PrepareCommit(int n) {
  RETURN_IF_ERROR(pending_.Check(n, "SentinelKvCache"));
  if (n != static_cast<int>(pending_plan_.roles.size())) {
    return absl::FailedPreconditionError(absl::StrCat("SentinelKvCache: Commit(", n, ") but Feed planned ",
                                                      pending_plan_.roles.size(), " tokens"));
  }
  pending_.MarkPrepared(n);
  return absl::OkStatus();
}

absl::Status SentinelKvCache::Commit(int n) {
  if (!pending_.prepared(n)) RETURN_IF_ERROR(PrepareCommit(n));
  roles_.insert(roles_.end(), pending_plan_.roles.begin(), pending_plan_.roles.end());
  positions_.insert(positions_.end(), pending_plan_.positions.begin(), pending_plan_.positions.end());
  span_id_.insert(span_id_.end(), pending_span_id_.begin(), pending_span_id_.end());
  for (SentinelRole r : pending_plan_.roles) num_spans_ += r == SentinelRole::kClose ? 1 : 0;
  plan_ = pending_plan_;
  plan_.roles.clear();
  plan_.positions.clear();
  num_tokens_ += n;
  pending_.Clear();
  return absl::OkStatus();
}

void SentinelKvCache::Truncate(int) { pending_.Clear(); }

int64_t SentinelKvCache::memory_bytes() const {
  int64_t bytes = CapacityBytes(k_) + CapacityBytes(v_) + CapacityBytes(roles_) + CapacityBytes(positions_) +
                  CapacityBytes(span_id_) + CapacityBytes(pending_span_id_) + CapacityBytes(pending_visible_);
  for (const SentinelPlan* plan : {&plan_, &pending_plan_}) {
    bytes += CapacityBytes(plan->roles) + CapacityBytes(plan->positions);
  }
  for (const std::vector<int>& keys : pending_visible_) bytes += CapacityBytes(keys);
  return bytes;
}

int SentinelKvCache::num_kept() const {
  return static_cast<int>(std::count_if(roles_.begin(), roles_.end(), [](SentinelRole r) {
    return r == SentinelRole::kOrdinary || r == SentinelRole::kClose;
  }));
}

absl::StatusOr<std::vector<Span>> SentinelKvCache::ToSpans(const SpanHeader& header, const CodecSpec& codec) const {
  if (plan_.span_open) return absl::FailedPreconditionError("SentinelKvCache::ToSpans: a sentinel span is open");
  const SpanGeometry& g = header.geometry;
  if (g.num_layers != options_.num_layers || g.num_kv_heads != options_.num_kv_heads ||
      g.head_dim != options_.head_dim || g.span_tokens < 1) {
    return absl::InvalidArgumentError("SentinelKvCache::ToSpans: geometry differs from the cache's");
  }
  const int S = g.span_tokens;
  const int num_spans = plan_.next_position / S;
  const int hd = options_.head_dim, kv_heads = options_.num_kv_heads;
  const int64_t row = int64_t{kv_heads} * hd;
  // The canonical policy label, e.g. "sentinel/int4(g=32)".
  const std::string label = absl::StrCat("sentinel/", CodecName(codec.codec),
                                         IsQuantized(codec.codec) ? absl::StrCat("(g=", codec.group_size, ")") : "");
  // The kept tokens (ordinary and <CR>) of each full span, in one pass.
  std::vector<std::vector<int>> kept_of(num_spans);
  for (int t = 0; t < num_tokens_; ++t) {
    const bool keep = roles_[t] == SentinelRole::kOrdinary || roles_[t] == SentinelRole::kClose;
    if (keep && positions_[t] < num_spans * S) kept_of[positions_[t] / S].push_back(t);
  }
  std::vector<Span> spans;
  for (int i = 0; i < num_spans; ++i) {
    const std::vector<int>& kept = kept_of[i];
    Span span;
    span.header = header;
    span.header.policy = label;
    span.header.first_position = i * S;
    span.header.span_index = i;
    span.heads.resize(g.num_heads_total());
    const int n = static_cast<int>(kept.size());
    std::vector<int32_t> positions(n);
    for (int e = 0; e < n; ++e) positions[e] = positions_[kept[e]];
    std::vector<float> log_counts(n, 0.0f), keys(static_cast<size_t>(n) * hd), values(keys.size());
    for (int l = 0; l < g.num_layers; ++l) {
      for (int h = 0; h < kv_heads; ++h) {
        for (int e = 0; e < n; ++e) {
          const size_t at = (static_cast<size_t>(l) * options_.capacity_tokens + kept[e]) * row + h * hd;
          std::copy_n(&k_[at], hd, &keys[static_cast<size_t>(e) * hd]);
          std::copy_n(&v_[at], hd, &values[static_cast<size_t>(e) * hd]);
        }
        ASSIGN_OR_RETURN(EntryBlock block,
                         EncodeBlock(codec, DenseEntries{hd, positions, log_counts, keys, values}));
        span.head(l, h).blocks.push_back(std::move(block));
      }
    }
    RETURN_IF_ERROR(ValidateSpan(span));
    spans.push_back(std::move(span));
  }
  return spans;
}

}  // namespace kvspan::kvcache
