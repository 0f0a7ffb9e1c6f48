#include "model/kv_cache.h"

#include <cmath>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/attention.h"

namespace kvspan::model {

absl::StatusOr<DenseRows> KvCache::ExportDenseRows() const {
  return absl::UnimplementedError("this KV cache cannot export its rows");
}

absl::Status KvCache::ImportDenseRows(const DenseRows&) {
  return absl::UnimplementedError("this KV cache cannot import rows");
}

absl::Status CheckDenseRows(const DenseRows& rows, int num_layers, int num_kv_heads, int num_heads, int head_dim,
                            bool with_queries) {
  if (rows.num_layers != num_layers || rows.num_kv_heads != num_kv_heads || rows.num_heads != num_heads ||
      rows.head_dim != head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dense rows of geometry layers=", rows.num_layers, " kv_heads=", rows.num_kv_heads, " heads=", rows.num_heads,
        " head_dim=", rows.head_dim, ", want ", num_layers, "/", num_kv_heads, "/", num_heads, "/", head_dim));
  }
  if (rows.num_tokens < 0 || rows.first_position < 0) {
    return absl::InvalidArgumentError("dense rows with a negative count or position");
  }
  const int64_t kv = int64_t{num_layers} * rows.num_tokens * num_kv_heads * head_dim;
  const int64_t q = with_queries ? int64_t{num_layers} * rows.num_tokens * num_heads * head_dim : 0;
  if (static_cast<int64_t>(rows.k.size()) != kv || static_cast<int64_t>(rows.v.size()) != kv ||
      static_cast<int64_t>(rows.q.size()) != q) {
    return absl::InvalidArgumentError(absl::StrCat("dense rows: arrays of ", rows.k.size(), "/", rows.v.size(), "/",
                                                   rows.q.size(), " floats, want ", kv, "/", kv, "/", q));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DenseKvCache>> DenseKvCache::Create(const Options& o) {
  if (o.num_layers < 1 || o.num_kv_heads < 1 || o.head_dim < 1 || o.num_heads < o.num_kv_heads ||
      o.num_heads % o.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DenseKvCache: bad geometry layers=", o.num_layers, " heads=", o.num_heads,
        " kv_heads=", o.num_kv_heads, " head_dim=", o.head_dim));
  }
  if (o.capacity_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("DenseKvCache: capacity_tokens = ", o.capacity_tokens, " < 1"));
  }
  if (o.sliding_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat("DenseKvCache: sliding_window = ", o.sliding_window, " < 0"));
  }
  std::unique_ptr<DenseKvCache> cache(new DenseKvCache(o));
  const int64_t n = int64_t{o.num_layers} * o.num_kv_heads * o.capacity_tokens * o.head_dim;
  // Default-initialized: pages are touched only as tokens are written.
  cache->keys_.reset(new (std::nothrow) float[n]);
  cache->values_.reset(new (std::nothrow) float[n]);
  if (cache->keys_ == nullptr || cache->values_ == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("DenseKvCache: cannot allocate 2 x ", n * sizeof(float), " bytes"));
  }
  cache->buffer_floats_ = n;
  return cache;
}

DenseKvCache::DenseKvCache(const Options& options)
    : options_(options), pending_(options.num_layers) {}

int64_t DenseKvCache::Offset(int layer, int kv_head, int token) const {
  return ((int64_t{layer} * options_.num_kv_heads + kv_head) * options_.capacity_tokens + token) *
         options_.head_dim;
}

absl::Status DenseKvCache::AppendAndAttend(int layer, const LayerQkv& in, float* out, ThreadPool* pool) {
  if (layer < 0 || layer >= options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("DenseKvCache: layer ", layer, " out of range"));
  }
  if (in.num_new < 1) {
    return absl::InvalidArgumentError(absl::StrCat("DenseKvCache: num_new = ", in.num_new, " < 1"));
  }
  if (in.num_new > options_.capacity_tokens - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "DenseKvCache: ", num_tokens_, " + ", in.num_new, " tokens exceed the capacity of ",
        options_.capacity_tokens));
  }
  const int hd = options_.head_dim;
  for (int j = 0; j < in.num_new; ++j) {
    for (int g = 0; g < options_.num_kv_heads; ++g) {
      const int64_t dst = Offset(layer, g, num_tokens_ + j);
      std::memcpy(&keys_[dst], in.k + j * in.row_stride + g * hd, hd * sizeof(float));
      std::memcpy(&values_[dst], in.v + j * in.row_stride + g * hd, hd * sizeof(float));
    }
  }
  pending_.Append(layer, in.num_new);

  kernels::AttentionParams p;
  p.q = in.q;
  p.q_row_stride = in.row_stride;
  p.k = &keys_[Offset(layer, 0, 0)];
  p.k_head_stride = int64_t{options_.capacity_tokens} * hd;
  p.k_token_stride = hd;
  p.v = &values_[Offset(layer, 0, 0)];
  p.v_head_stride = p.k_head_stride;
  p.v_token_stride = hd;
  p.out = out;
  p.out_row_stride = int64_t{options_.num_heads} * hd;
  p.num_q = in.num_new;
  p.num_keys = num_tokens_ + in.num_new;
  p.num_heads = options_.num_heads;
  p.num_kv_heads = options_.num_kv_heads;
  p.head_dim = hd;
  p.q_start = num_tokens_;
  p.window = options_.sliding_window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  kernels::Attention(p, pool);
  return absl::OkStatus();
}

absl::Status DenseKvCache::PrepareCommit(int n) {
  RETURN_IF_ERROR(pending_.Check(n, "DenseKvCache"));
  pending_.MarkPrepared(n);
  return absl::OkStatus();
}

absl::Status DenseKvCache::Commit(int n) {
  if (!pending_.prepared(n)) RETURN_IF_ERROR(PrepareCommit(n));
  num_tokens_ += n;
  pending_.Clear();
  return absl::OkStatus();
}

void DenseKvCache::Truncate(int num_tokens) {
  if (num_tokens < num_tokens_) num_tokens_ = std::max(0, num_tokens);
  pending_.Clear();
}

absl::StatusOr<DenseRows> DenseKvCache::ExportDenseRows() const {
  if (pending_.any()) return absl::FailedPreconditionError("DenseKvCache: tokens are pending");
  const Options& o = options_;
  DenseRows rows;
  rows.first_position = 0;
  rows.num_tokens = num_tokens_;
  rows.num_layers = o.num_layers;
  rows.num_kv_heads = o.num_kv_heads;
  rows.num_heads = o.num_heads;
  rows.head_dim = o.head_dim;
  const int64_t row = int64_t{o.num_kv_heads} * o.head_dim;
  rows.k.resize(int64_t{o.num_layers} * num_tokens_ * row);
  rows.v.resize(rows.k.size());
  for (int l = 0; l < o.num_layers; ++l) {
    for (int t = 0; t < num_tokens_; ++t) {
      for (int h = 0; h < o.num_kv_heads; ++h) {
        const int64_t at = (int64_t{l} * num_tokens_ + t) * row + int64_t{h} * o.head_dim;
        std::memcpy(&rows.k[at], key(l, h, t), sizeof(float) * o.head_dim);
        std::memcpy(&rows.v[at], value(l, h, t), sizeof(float) * o.head_dim);
      }
    }
  }
  return rows;
}

absl::Status DenseKvCache::ImportDenseRows(const DenseRows& rows) {
  const Options& o = options_;
  if (pending_.any()) return absl::FailedPreconditionError("DenseKvCache: tokens are pending");
  RETURN_IF_ERROR(CheckDenseRows(rows, o.num_layers, o.num_kv_heads, o.num_heads, o.head_dim, false));
  if (rows.first_position != num_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("DenseKvCache: rows start at position ", rows.first_position,
                                                   ", the cache holds ", num_tokens_, " tokens"));
  }
  if (rows.num_tokens > o.capacity_tokens - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat("DenseKvCache: ", num_tokens_, " + ", rows.num_tokens,
                                                     " tokens exceed the capacity of ", o.capacity_tokens));
  }
  const int64_t row = int64_t{o.num_kv_heads} * o.head_dim;
  for (int l = 0; l < o.num_layers; ++l) {
    for (int t = 0; t < rows.num_tokens; ++t) {
      for (int h = 0; h < o.num_kv_heads; ++h) {
        const int64_t at = (int64_t{l} * rows.num_tokens + t) * row + int64_t{h} * o.head_dim;
        std::memcpy(mutable_key(l, h, num_tokens_ + t), &rows.k[at], sizeof(float) * o.head_dim);
        std::memcpy(mutable_value(l, h, num_tokens_ + t), &rows.v[at], sizeof(float) * o.head_dim);
      }
    }
  }
  num_tokens_ += rows.num_tokens;
  return absl::OkStatus();
}

const float* DenseKvCache::key(int layer, int kv_head, int token) const {
  return &keys_[Offset(layer, kv_head, token)];
}

const float* DenseKvCache::value(int layer, int kv_head, int token) const {
  return &values_[Offset(layer, kv_head, token)];
}

float* DenseKvCache::mutable_key(int layer, int kv_head, int token) {
  return &keys_[Offset(layer, kv_head, token)];
}

float* DenseKvCache::mutable_value(int layer, int kv_head, int token) {
  return &values_[Offset(layer, kv_head, token)];
}

}  // namespace kvspan::model
