#include "kvcache/compressed_kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/memory_bytes.h"
#include "common/status_macros.h"
#include "model/model.h"

namespace kvspan::kvcache {
namespace {

// views_ borrows the block arrays of spans_: a reallocation of spans_ must move (keeping
// every vector's buffer), never copy, the Spans.
static_assert(std::is_nothrow_move_constructible_v<Span>);

// Queries per attention task: decode steps (n = 1) get one task per KV head; prefill
// chunks are split further so both cores stay busy.
constexpr int kQueryChunk = 16;
// When (KV heads x query chunks) gives fewer than kMinAttentionTasks tasks, each also
// takes a range of at least kMinSpansPerPart spans (the first range also the dense tail),
// merged afterwards: a decode step with 1..4 KV heads still fills 2..8 threads. The split
// depends on the shape only (never on the pool), so outputs do not depend on threads.
constexpr int kMinAttentionTasks = 8;
constexpr int kMinSpansPerPart = 4;

absl::Status CheckSpanFits(const Span& span, const SpanGeometry& geometry, int index, const char* who) {
  if (span.header.geometry != geometry) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": span ", index, " geometry (layers=", span.header.geometry.num_layers,
        " kv_heads=", span.header.geometry.num_kv_heads, " head_dim=", span.header.geometry.head_dim,
        " S=", span.header.geometry.span_tokens, ") differs from the cache's"));
  }
  const int64_t expected = int64_t{index} * geometry.span_tokens;
  if (span.header.first_position != expected || span.header.span_index != index) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": span ", index, " has first_position ",
                                                   span.header.first_position, " and span_index ",
                                                   span.header.span_index, ", want ", expected, " and ", index));
  }
  return ValidateSpan(span);
}

}  // namespace

absl::Status CheckPrefixSpans(const std::vector<Span>& spans, const SpanGeometry& geometry, int capacity_tokens,
                              const char* who) {
  if (static_cast<int64_t>(spans.size()) * geometry.span_tokens > capacity_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", spans.size(), " spans of ", geometry.span_tokens,
                                                   " tokens exceed capacity ", capacity_tokens));
  }
  for (size_t i = 0; i < spans.size(); ++i) {
    absl::Status s = CheckSpanFits(spans[i], geometry, static_cast<int>(i), who);
    if (!s.ok()) return absl::InvalidArgumentError(s.message());
  }
  return absl::OkStatus();
}

CompressedKvCache::Options CompressedKvCache::OptionsFor(const model::ModelConfig& config, int span_tokens,
                                                         int capacity_tokens) {
  Options o;
  o.num_layers = config.num_layers;
  o.num_heads = config.num_heads;
  o.num_kv_heads = config.num_kv_heads;
  o.head_dim = config.head_dim;
  o.span_tokens = span_tokens;
  o.capacity_tokens = capacity_tokens;
  o.sliding_window = config.sliding_window;
  o.rope_inv_freq = model::RopeInvFreqFor(config);
  return o;
}

CompressedKvCache::CompressedKvCache(const Options& options, std::shared_ptr<SpanCompressor> compressor)
    : options_(options),
      compressor_(std::move(compressor)),
      needs_(compressor_->query_needs()),
      pending_(options.num_layers) {}

absl::StatusOr<std::unique_ptr<CompressedKvCache>> CompressedKvCache::Create(
    const Options& o, std::shared_ptr<SpanCompressor> compressor) {
  const SpanGeometry geometry{o.num_layers, o.num_kv_heads, o.head_dim, o.span_tokens};
  if (absl::Status s = ValidateGeometry(geometry); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: ", s.message()));
  }
  if (o.num_heads < o.num_kv_heads || o.num_heads % o.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: num_heads = ", o.num_heads,
                                                   " is not a multiple of num_kv_heads = ", o.num_kv_heads));
  }
  if (o.capacity_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: capacity_tokens = ", o.capacity_tokens));
  }
  if (o.sliding_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: sliding_window = ", o.sliding_window));
  }
  if (compressor == nullptr) return absl::InvalidArgumentError("CompressedKvCache: null compressor");
  if (!o.rope_inv_freq.empty() && static_cast<int>(o.rope_inv_freq.size()) * 2 != o.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: ", o.rope_inv_freq.size(),
                                                   " RoPE frequencies for head_dim ", o.head_dim));
  }
  std::unique_ptr<CompressedKvCache> cache(new CompressedKvCache(o, std::move(compressor)));
  cache->ReserveTail(o.span_tokens + 1);
  return cache;
}

absl::StatusOr<std::unique_ptr<CompressedKvCache>> CompressedKvCache::FromSpans(
    const Options& o, std::shared_ptr<SpanCompressor> compressor, std::vector<Span> spans) {
  auto cache = Create(o, std::move(compressor));
  if (!cache.ok()) return cache.status();
  RETURN_IF_ERROR(CheckPrefixSpans(spans, {o.num_layers, o.num_kv_heads, o.head_dim, o.span_tokens},
                                   o.capacity_tokens, "CompressedKvCache::FromSpans"));
  (*cache)->spans_ = std::move(spans);
  for (const Span& span : (*cache)->spans_) (*cache)->views_.emplace_back(span);
  (*cache)->num_tokens_ = (*cache)->num_compressed_tokens();
  return cache;
}

void CompressedKvCache::ReserveTail(int tokens) {
  if (tokens <= tail_capacity_) return;
  const int new_capacity = std::max(tokens, 2 * tail_capacity_);
  // Re-lays a [layer][capacity][row] buffer out for the new capacity, keeping its contents.
  auto grow = [&](std::vector<float>* buffer, int64_t row) {
    std::vector<float> grown(int64_t{options_.num_layers} * new_capacity * row);
    for (int l = 0; l < options_.num_layers && tail_capacity_ > 0; ++l) {
      std::copy_n(&(*buffer)[int64_t{l} * tail_capacity_ * row], tail_capacity_ * row,
                  &grown[int64_t{l} * new_capacity * row]);
    }
    *buffer = std::move(grown);
  };
  const int64_t kv_row = int64_t{options_.num_kv_heads} * options_.head_dim;
  grow(&tail_k_, kv_row);
  grow(&tail_v_, kv_row);
  if (needs_.any()) grow(&tail_q_, int64_t{options_.num_heads} * options_.head_dim);
  tail_capacity_ = new_capacity;
}

absl::Status CompressedKvCache::AppendAndAttend(int layer, const model::LayerQkv& in, float* out,
                                                ThreadPool* pool) {
  if (layer < 0 || layer >= options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: layer ", layer, " out of range"));
  }
  if (in.num_new < 1) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: num_new = ", in.num_new, " < 1"));
  }
  if (in.num_new > options_.capacity_tokens - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat("CompressedKvCache: ", num_tokens_, " + ", in.num_new,
                                                     " tokens exceed the capacity of ", options_.capacity_tokens));
  }
  const int n = in.num_new;
  const int hd = options_.head_dim;
  const int kv_heads = options_.num_kv_heads;
  const int group = options_.num_heads / kv_heads;
  const int base = num_tail_tokens();
  ReserveTail(base + n);
  for (int j = 0; j < n; ++j) {
    std::memcpy(TailKey(layer, base + j), in.k + j * in.row_stride, sizeof(float) * kv_heads * hd);
    std::memcpy(TailValue(layer, base + j), in.v + j * in.row_stride, sizeof(float) * kv_heads * hd);
    if (needs_.any()) {
      std::memcpy(TailQuery(layer, base + j), in.q + j * in.row_stride, sizeof(float) * options_.num_heads * hd);
    }
  }
  pending_.Append(layer, n);

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int chunks = (n + kQueryChunk - 1) / kQueryChunk;
  const int64_t out_row_stride = int64_t{options_.num_heads} * hd;
  const float* tail_k = TailKey(layer, 0);
  const float* tail_v = TailValue(layer, 0);
  const int num_spans = static_cast<int>(spans_.size());
  const int head_tasks = kv_heads * chunks;
  const int parts = std::max(1, std::min((kMinAttentionTasks + head_tasks - 1) / head_tasks,
                                         num_spans / kMinSpansPerPart));
  // With parts > 1 (then head_tasks < kMinAttentionTasks), the partial states of every
  // task, [head_tasks, parts, kQueryChunk * group rows], merged after the tasks; with one
  // part each task keeps its state and finishes it itself.
  const int64_t max_rows = int64_t{kQueryChunk} * group;
  const int64_t shared_rows = parts > 1 ? head_tasks * parts * max_rows : 0;
  std::vector<float> m(shared_rows), s(shared_rows), o(shared_rows * hd);
  auto state_of = [&](int64_t head_task, int part) {
    const int64_t row0 = (head_task * parts + part) * max_rows;
    return kernels::PartialState{&m[row0], &s[row0], &o[row0 * hd]};
  };
  const int window = options_.sliding_window;
  auto task = [&](int64_t t) {
    const int64_t head_task = t / parts;
    const int part = static_cast<int>(t % parts);
    const int g = static_cast<int>(head_task / chunks);
    const int j0 = static_cast<int>(head_task % chunks) * kQueryChunk;
    const int nq = std::min(kQueryChunk, n - j0);
    const int rows = nq * group;
    std::vector<float> own_m, own_s, own_o;
    kernels::PartialState state;
    if (parts == 1) {
      own_m.resize(rows);
      own_s.resize(rows);
      own_o.resize(int64_t{rows} * hd);
      state = {own_m.data(), own_s.data(), own_o.data()};
    } else {
      state = state_of(head_task, part);
    }
    kernels::InitPartial(state, rows, hd);
    const float* q = in.q + j0 * in.row_stride + int64_t{g} * group * hd;
    const int32_t first_query = num_tokens_ + j0;  // position of this task's first query
    for (int i = part * num_spans / parts; i < (part + 1) * num_spans / parts; ++i) {
      const Span& span = spans_[i];
      // A span wholly outside the window of the task's first query is outside every later
      // query's window too.
      if (window > 0 &&
          int64_t{span.header.first_position} + options_.span_tokens - 1 <= int64_t{first_query} - window) {
        continue;
      }
      for (const kernels::SpanBlockView& view : views_[i].head(layer, g)) {
        kernels::SpanAttention(
            {view, q, in.row_stride, nq, group, scale, state, window, first_query, options_.span_key_dot}, nullptr);
      }
    }
    if (part != 0) return;
    kernels::DensePartialParams dp;
    dp.q = q;
    dp.q_row_stride = in.row_stride;
    dp.num_q = nq;
    dp.group = group;
    dp.head_dim = hd;
    dp.k = tail_k + int64_t{g} * hd;
    dp.k_token_stride = int64_t{kv_heads} * hd;
    dp.v = tail_v + int64_t{g} * hd;
    dp.v_token_stride = dp.k_token_stride;
    dp.num_keys = base + j0 + nq;
    dp.q_start = base + j0;
    dp.scale = scale;
    dp.state = state;
    dp.window = window;
    kernels::DenseAttentionPartial(dp, nullptr);
    if (parts == 1) {
      kernels::FinishPartial(state, nq, group, hd, out + j0 * out_row_stride + int64_t{g} * group * hd,
                             out_row_stride);
    }
  };
  // parts > 1: merges the parts of a (KV head, query chunk) in part order, writes its output.
  auto finish = [&](int64_t head_task) {
    const int g = static_cast<int>(head_task / chunks);
    const int j0 = static_cast<int>(head_task % chunks) * kQueryChunk;
    const int nq = std::min(kQueryChunk, n - j0);
    const kernels::PartialState state = state_of(head_task, 0);
    for (int part = 1; part < parts; ++part) kernels::MergePartial(state_of(head_task, part), state, nq * group, hd);
    kernels::FinishPartial(state, nq, group, hd, out + j0 * out_row_stride + int64_t{g} * group * hd,
                           out_row_stride);
  };
  const int64_t num_tasks = int64_t{head_tasks} * parts;
  if (pool == nullptr || num_tasks == 1) {
    for (int64_t t = 0; t < num_tasks; ++t) task(t);
  } else {
    pool->ParallelFor(num_tasks, task);
  }
  if (parts > 1) {
    for (int64_t t = 0; t < head_tasks; ++t) finish(t);  // small: fewer than 8 (head, chunk) pairs
  }
  return absl::OkStatus();
}

absl::Status CompressedKvCache::PrepareCommit(int n) {
  RETURN_IF_ERROR(pending_.Check(n, "CompressedKvCache"));
  ClearStaged();
  const int S = options_.span_tokens;
  const SpanGeometry geometry{options_.num_layers, options_.num_kv_heads, options_.head_dim, S};
  const int64_t row = int64_t{options_.num_kv_heads} * options_.head_dim;
  const int64_t q_row = int64_t{options_.num_heads} * options_.head_dim;
  // The committed tail once the n tokens are committed; span k of this step starts at its
  // token k * S. A query-aware compressor waits until its observation window follows the span.
  const int tail_tokens = num_tail_tokens() + n;
  for (int first = 0; tail_tokens - first >= S + needs_.observation_tokens; first += S) {
    DenseSpanView view;
    view.geometry = geometry;
    view.first_position = num_compressed_tokens() + first;
    view.span_index = static_cast<int32_t>(spans_.size() + staged_spans_.size());
    view.kv.keys = TailKey(0, first);
    view.kv.values = TailValue(0, first);
    view.kv.layer_stride = int64_t{tail_capacity_} * row;
    view.kv.head_stride = options_.head_dim;
    view.kv.token_stride = row;
    DenseQueryView queries;
    if (needs_.any()) {
      queries.q = TailQuery(0, first);
      queries.layer_stride = int64_t{tail_capacity_} * q_row;
      queries.token_stride = q_row;
      queries.num_heads = options_.num_heads;
      queries.num_tokens = tail_tokens - first;
      queries.rope_inv_freq = options_.rope_inv_freq;
      view.queries = &queries;
    }
    absl::StatusOr<Span> span = compressor_->Compress(view);
    absl::Status status = span.status();
    if (status.ok()) status = CheckSpanFits(*span, geometry, view.span_index, "CompressedKvCache: compressor");
    if (!status.ok()) {
      ClearStaged();
      // The compressor's own error as it returned it; a span that breaks its contract is ours.
      return span.ok() ? absl::InternalError(status.message()) : status;
    }
    staged_spans_.push_back(*std::move(span));
  }
  for (const Span& span : staged_spans_) staged_views_.emplace_back(span);
  pending_.MarkPrepared(n);
  return absl::OkStatus();
}

absl::Status CompressedKvCache::Commit(int n) {
  if (!pending_.prepared(n)) RETURN_IF_ERROR(PrepareCommit(n));
  num_tokens_ += n;
  if (!staged_spans_.empty()) {
    // The staged spans' tokens leave the tail: the rest moves to its front.
    const int shift = static_cast<int>(staged_spans_.size()) * options_.span_tokens;
    const int remaining = num_tail_tokens() - shift;
    const int64_t row = int64_t{options_.num_kv_heads} * options_.head_dim;
    const int64_t q_row = int64_t{options_.num_heads} * options_.head_dim;
    for (int l = 0; l < options_.num_layers; ++l) {
      std::memmove(TailKey(l, 0), TailKey(l, shift), sizeof(float) * remaining * row);
      std::memmove(TailValue(l, 0), TailValue(l, shift), sizeof(float) * remaining * row);
      if (needs_.any()) std::memmove(TailQuery(l, 0), TailQuery(l, shift), sizeof(float) * remaining * q_row);
    }
    // Moving a Span keeps its block arrays, so each staged view stays valid.
    for (size_t i = 0; i < staged_spans_.size(); ++i) {
      spans_.push_back(std::move(staged_spans_[i]));
      views_.push_back(std::move(staged_views_[i]));
    }
    ClearStaged();
  }
  pending_.Clear();
  return absl::OkStatus();
}

absl::StatusOr<model::DenseRows> CompressedKvCache::ExportDenseRows() const {
  if (pending_.any()) return absl::FailedPreconditionError("CompressedKvCache: tokens are pending");
  const Options& o = options_;
  model::DenseRows rows;
  rows.first_position = num_compressed_tokens();
  rows.num_tokens = num_tail_tokens();
  rows.num_layers = o.num_layers;
  rows.num_kv_heads = o.num_kv_heads;
  rows.num_heads = o.num_heads;
  rows.head_dim = o.head_dim;
  const int64_t row = int64_t{o.num_kv_heads} * o.head_dim;
  const int64_t q_row = int64_t{o.num_heads} * o.head_dim;
  const int n = rows.num_tokens;
  rows.k.resize(int64_t{o.num_layers} * n * row);
  rows.v.resize(rows.k.size());
  if (needs_.any()) rows.q.resize(int64_t{o.num_layers} * n * q_row);
  for (int l = 0; l < o.num_layers && n > 0; ++l) {
    std::copy_n(&tail_k_[TailOffset(l, 0)], n * row, &rows.k[int64_t{l} * n * row]);
    std::copy_n(&tail_v_[TailOffset(l, 0)], n * row, &rows.v[int64_t{l} * n * row]);
    if (needs_.any()) {
      std::copy_n(&tail_q_[(int64_t{l} * tail_capacity_) * q_row], n * q_row, &rows.q[int64_t{l} * n * q_row]);
    }
  }
  return rows;
}

absl::Status CompressedKvCache::ImportDenseRows(const model::DenseRows& rows) {
  const Options& o = options_;
  if (pending_.any()) return absl::FailedPreconditionError("CompressedKvCache: tokens are pending");
  RETURN_IF_ERROR(model::CheckDenseRows(rows, o.num_layers, o.num_kv_heads, o.num_heads, o.head_dim, needs_.any()));
  if (num_tail_tokens() != 0 || rows.first_position != num_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: rows at position ", rows.first_position,
                                                   " into a cache of ", num_tokens_, " tokens with ",
                                                   num_tail_tokens(), " in its tail; want an empty tail"));
  }
  if (rows.num_tokens >= o.span_tokens + needs_.observation_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: ", rows.num_tokens,
                                                   " rows would complete a span of ", o.span_tokens));
  }
  if (rows.num_tokens > o.capacity_tokens - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat("CompressedKvCache: ", num_tokens_, " + ", rows.num_tokens,
                                                     " tokens exceed the capacity of ", o.capacity_tokens));
  }
  const int n = rows.num_tokens;
  ReserveTail(n + 1);
  const int64_t row = int64_t{o.num_kv_heads} * o.head_dim;
  const int64_t q_row = int64_t{o.num_heads} * o.head_dim;
  for (int l = 0; l < o.num_layers && n > 0; ++l) {
    std::copy_n(&rows.k[int64_t{l} * n * row], n * row, TailKey(l, 0));
    std::copy_n(&rows.v[int64_t{l} * n * row], n * row, TailValue(l, 0));
    if (needs_.any()) std::copy_n(&rows.q[int64_t{l} * n * q_row], n * q_row, TailQuery(l, 0));
  }
  num_tokens_ += n;
  return absl::OkStatus();
}

void CompressedKvCache::ClearStaged() {
  staged_spans_.clear();
  staged_views_.clear();
}

int64_t CompressedKvCache::memory_bytes() const {
  int64_t bytes = CapacityBytes(tail_k_) + CapacityBytes(tail_v_) + CapacityBytes(tail_q_) +
                  CapacityBytes(options_.rope_inv_freq);
  for (const std::vector<Span>* spans : {&spans_, &staged_spans_}) {
    bytes += CapacityBytes(*spans);
    for (const Span& span : *spans) bytes += SpanMemoryBytes(span);
  }
  for (const std::vector<SpanKernelViews>* views : {&views_, &staged_views_}) {
    bytes += CapacityBytes(*views);
    for (const SpanKernelViews& v : *views) bytes += v.memory_bytes();
  }
  return bytes;
}

void CompressedKvCache::Truncate(int num_tokens) {
  pending_.Clear();
  ClearStaged();
  if (num_tokens >= num_compressed_tokens() && num_tokens < num_tokens_) num_tokens_ = num_tokens;
}

absl::Status CompressedKvCache::TruncateTo(int num_tokens) {
  if (num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("CompressedKvCache: TruncateTo(", num_tokens, ")"));
  }
  if (num_tokens < num_compressed_tokens()) {
    return absl::FailedPreconditionError(absl::StrCat("CompressedKvCache: TruncateTo(", num_tokens,
                                                      ") reaches into the compressed prefix of ",
                                                      num_compressed_tokens(), " tokens"));
  }
  Truncate(num_tokens);
  return absl::OkStatus();
}

}  // namespace kvspan::kvcache
