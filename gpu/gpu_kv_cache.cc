#include "gpu/gpu_kv_cache.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/span_codec_cuda.h"
#include "kvcache/compress.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/entry_block.h"
#include "kvcache/policy.h"
#include "kvcache/span_geometry.h"
#include "kvcache/span_kernel_views.h"

namespace kvspan::gpu {
namespace {

// The codec of a policy whose spans the device encodes, or none: no main reducer (sinks
// and / or window at most: every head keeps kvcache::ProtectedTokens, unchanged), no
// sharing stage, a plain codec.
std::optional<kernels::SpanCodec> PlainCodec(const kvcache::Policy& policy) {
  if (policy.main_reducer() != nullptr || policy.sharing.has_value()) return std::nullopt;
  const absl::StatusOr<kvcache::Codec> codec = kvcache::CodecByName(policy.codec.name);
  if (!codec.ok()) return std::nullopt;  // mikv: several blocks per head
  return static_cast<kernels::SpanCodec>(*codec);  // the ids mirror (span_attention.h)
}

// PlainCodec, for a policy as ParsePolicy produces it (CompressSpan's own check: a
// hand-built one goes to the host path, which rejects it with InvalidArgument).
bool EncodedOnDevice(const kvcache::Policy& policy) {
  if (!PlainCodec(policy).has_value()) return false;
  const absl::StatusOr<kvcache::Policy> reparsed = kvcache::ParsePolicy(policy.ToString());
  return reparsed.ok() && *reparsed == policy;
}

}  // namespace

int64_t GpuKvCache::memory_bytes() const {
  int64_t bytes = k_.size_bytes() + v_.size_bytes();
  for (const DeviceSpan& span : device_spans_) bytes += span.arena.size_bytes();
  return bytes;
}

absl::StatusOr<std::unique_ptr<GpuKvCache>> GpuKvCache::Create(const model::ModelConfig& c, int capacity_tokens,
                                                                const GpuCacheOptions& options) {
  if (capacity_tokens < 1 || capacity_tokens > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("capacity_tokens = ", capacity_tokens, " is outside [1, ",
                                                   c.max_position_embeddings, "]"));
  }
  if (options.compressor != nullptr) {
    if (options.span_tokens < 1 || options.span_tokens > kvcache::kMaxSpanTokens) {
      return absl::InvalidArgumentError(absl::StrCat("span_tokens = ", options.span_tokens, " is outside [1, ",
                                                     kvcache::kMaxSpanTokens, "]"));
    }
    if (options.compressor->query_needs().any()) {
      return absl::UnimplementedError("query-aware span compressors do not run on the GPU yet");
    }
  }
  std::unique_ptr<GpuKvCache> cache(new GpuKvCache());
  cache->capacity_ = capacity_tokens;
  cache->num_layers_ = c.num_layers;
  cache->num_kv_heads_ = c.num_kv_heads;
  cache->num_heads_ = c.num_heads;
  cache->head_dim_ = c.head_dim;
  cache->dense_capacity_ = options.compressor != nullptr ? std::min(capacity_tokens, 2 * options.span_tokens)
                                                          : capacity_tokens;
  cache->layer_floats_ = int64_t{c.num_kv_heads} * cache->dense_capacity_ * c.head_dim;
  cache->compressor_ = options.compressor;
  if (const auto* policy = dynamic_cast<const kvcache::PolicySpanCompressor*>(options.compressor.get());
      policy != nullptr && EncodedOnDevice(policy->options().policy)) {
    cache->device_codec_ = policy;
  }
  cache->span_tokens_ = options.compressor != nullptr ? options.span_tokens : 0;
  const int64_t bytes = cache->layer_floats_ * c.num_layers * 4;
  RETURN_IF_ERROR(cache->k_.Reserve(bytes));
  RETURN_IF_ERROR(cache->v_.Reserve(bytes));
  return cache;
}

absl::StatusOr<GpuKvCache::DeviceSpan> GpuKvCache::CompressSpan(int first_position, kvcache::Span* out) const {
  const GpuKvCache& cache = *this;
  const int layers = cache.num_layers_, heads = cache.num_kv_heads_, hd = cache.head_dim_, s = cache.span_tokens_;
  // The span's dense rows, [layer][kv head][token][channel], from the device.
  const int64_t head_floats = int64_t{s} * hd;
  std::vector<float> k(int64_t{layers} * heads * head_floats), v(k.size());
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      const int64_t row = first_position - cache.num_compressed_tokens();
      const int64_t src = (l * cache.layer_floats_ + (int64_t{h} * cache.dense_capacity_ + row) * hd) * 4;
      const int64_t dst = (int64_t{l} * heads + h) * head_floats;
      RETURN_IF_ERROR(cache.k_.CopyToHost(&k[dst], head_floats * 4, src));
      RETURN_IF_ERROR(cache.v_.CopyToHost(&v[dst], head_floats * 4, src));
    }
  }
  kvcache::DenseSpanView view;
  view.geometry = {layers, heads, hd, s};
  view.first_position = first_position;
  view.span_index = first_position / s;
  view.kv = {k.data(), v.data(), int64_t{heads} * head_floats, head_floats, hd};
  ASSIGN_OR_RETURN(kvcache::Span span, cache.compressor_->Compress(view));
  RETURN_IF_ERROR(kvcache::ValidateSpan(span));
  if (!(span.header.geometry == view.geometry) || span.header.first_position != first_position ||
      span.header.span_index != view.span_index) {
    return absl::InternalError("GpuKvCache: the compressor returned a span of another geometry or position");
  }
  ASSIGN_OR_RETURN(DeviceSpan device, UploadSpan(span));
  *out = std::move(span);
  return device;
}

absl::StatusOr<GpuKvCache::DeviceSpan> GpuKvCache::UploadSpan(const kvcache::Span& span) const {
  const int layers = num_layers_, heads = num_kv_heads_;
  // Upload every array the kernel views read (a shared block's source arrays once) into
  // one allocation, then the same views over device addresses.
  const kvcache::SpanKernelViews host(span);
  std::vector<uint8_t> staging;
  absl::flat_hash_map<const void*, int64_t> placed;
  auto place = [&](const void* ptr, int64_t bytes) -> int64_t {
    if (ptr == nullptr || bytes <= 0) return -1;
    auto [it, inserted] = placed.try_emplace(ptr, 0);
    if (!inserted) return it->second;
    const int64_t offset = (static_cast<int64_t>(staging.size()) + 15) / 16 * 16;
    staging.resize(offset + bytes);
    std::memcpy(staging.data() + offset, ptr, bytes);
    it->second = offset;
    return offset;
  };
  struct Placed {
    int64_t key_data, value_data, key_params, value_params, log_counts, key_scales, value_scales, positions;
  };
  std::vector<std::vector<Placed>> offsets(int64_t{layers} * heads);
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      for (const kernels::SpanBlockView& b : host.head(l, h)) {
        const int64_t n = b.num_entries;
        const int64_t codes = n * kernels::SpanCodecRowBytes(b.codec, b.head_dim);
        Placed p;
        p.key_data = place(b.key_data, codes);
        p.value_data = place(b.value_data, codes);
        p.key_params = place(b.key_params, 2 * kernels::SpanCodecKeyParamCount(b.codec, b.group_size, n, b.head_dim));
        p.value_params =
            place(b.value_params, 2 * kernels::SpanCodecValueParamCount(b.codec, b.group_size, n, b.head_dim));
        p.log_counts = place(b.log_counts, n * 4);
        p.key_scales = place(b.key_scales, n * 4);
        p.value_scales = place(b.value_scales, n * 4);
        p.positions = place(b.positions, n * 4);
        offsets[int64_t{l} * heads + h].push_back(p);
      }
    }
  }
  GpuKvCache::DeviceSpan device;
  RETURN_IF_ERROR(device.arena.Reserve(1));  // an allocation even for an empty span
  RETURN_IF_ERROR(device.arena.Assign(staging.data(), static_cast<int64_t>(staging.size())));
  const uint8_t* base = device.arena.as<uint8_t>();
  auto at = [&](int64_t offset) -> const uint8_t* { return offset < 0 ? nullptr : base + offset; };
  device.heads.resize(int64_t{layers} * heads);
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      const std::vector<kernels::SpanBlockView>& views = host.head(l, h);
      for (size_t i = 0; i < views.size(); ++i) {
        const Placed& p = offsets[int64_t{l} * heads + h][i];
        kernels::SpanBlockView d = views[i];
        d.key_data = at(p.key_data);
        d.value_data = at(p.value_data);
        d.key_params = reinterpret_cast<const uint16_t*>(at(p.key_params));
        d.value_params = reinterpret_cast<const uint16_t*>(at(p.value_params));
        d.log_counts = reinterpret_cast<const float*>(at(p.log_counts));
        d.key_scales = reinterpret_cast<const float*>(at(p.key_scales));
        d.value_scales = reinterpret_cast<const float*>(at(p.value_scales));
        d.positions = reinterpret_cast<const int32_t*>(at(p.positions));
        device.heads[int64_t{l} * heads + h].push_back(d);
      }
    }
  }
  return device;
}

absl::StatusOr<GpuKvCache::DeviceSpan> GpuKvCache::EncodeSpanOnDevice(int first_position, kvcache::Span* out) const {
  const GpuKvCache& cache = *this;
  const kvcache::Policy& policy = cache.device_codec_->options().policy;
  const kernels::SpanCodec codec = *PlainCodec(policy);
  const bool quantized = kernels::SpanCodecBits(codec) < 16;
  const int group_size = quantized ? static_cast<int>(policy.codec.Number("g")) : 0;
  const int layers = cache.num_layers_, heads = cache.num_kv_heads_, hd = cache.head_dim_, s = cache.span_tokens_;
  // The tokens every head keeps, as CompressSpan keeps them (all S for a codec-only policy).
  const std::vector<int> kept = kvcache::ProtectedTokens(policy, first_position, s);
  const int n = static_cast<int>(kept.size());
  const bool gathered = n < s;
  const int64_t blocks = int64_t{layers} * heads;
  const int64_t codes = n * kernels::SpanCodecRowBytes(codec, hd);
  const int64_t kpc = kernels::SpanCodecKeyParamCount(codec, group_size, n, hd);
  const int64_t vpc = kernels::SpanCodecValueParamCount(codec, group_size, n, hd);
  // One allocation: [key codes | value codes | key params | value params | positions |
  // token index (gathered only)], the first four [blocks][per block], the last two [n].
  auto align = [](int64_t x) { return (x + 255) / 256 * 256; };
  const int64_t vd_off = align(blocks * codes);
  const int64_t kp_off = align(vd_off + blocks * codes);
  const int64_t vp_off = align(kp_off + blocks * kpc * 2);
  const int64_t pos_off = align(vp_off + blocks * vpc * 2);
  const int64_t index_off = pos_off + int64_t{n} * 4;
  const int64_t total = index_off + (gathered ? int64_t{n} * 4 : 0);
  GpuKvCache::DeviceSpan device;
  RETURN_IF_ERROR(device.arena.Reserve(std::max<int64_t>(total, 1)));  // an allocation even for an empty span
  std::vector<int32_t> positions(n);
  for (int e = 0; e < n; ++e) positions[e] = first_position + kept[e];
  std::vector<int32_t> meta = positions;  // positions, then the token index
  if (gathered) meta.insert(meta.end(), kept.begin(), kept.end());
  if (n > 0) RETURN_IF_ERROR(device.arena.CopyFromHost(meta.data(), static_cast<int64_t>(meta.size()) * 4, pos_off));
  uint8_t* base = device.arena.as<uint8_t>();
  kernels::SpanCodecCudaParams p;
  p.codec = codec;
  p.group_size = group_size;
  p.num_layers = layers;
  p.num_kv_heads = heads;
  p.num_entries = n;
  p.head_dim = hd;
  const int64_t row = first_position - cache.num_compressed_tokens();
  p.keys = cache.k_.as<float>() + row * hd;
  p.values = cache.v_.as<float>() + row * hd;
  p.layer_stride = cache.layer_floats_;
  p.head_stride = int64_t{cache.dense_capacity_} * hd;
  p.token_stride = hd;
  p.token_index = gathered ? reinterpret_cast<const int32_t*>(base + index_off) : nullptr;
  p.key_data = base;
  p.value_data = base + vd_off;
  p.key_params = reinterpret_cast<uint16_t*>(base + kp_off);
  p.value_params = reinterpret_cast<uint16_t*>(base + vp_off);
  if (n > 0) RETURN_IF_ERROR(kernels::EncodeSpanCuda(p, nullptr));  // nothing kept: empty blocks

  // The host copy (the cache store and the transport take spans), as the compressor makes it.
  std::vector<uint8_t> host(pos_off);
  if (pos_off > 0) RETURN_IF_ERROR(device.arena.CopyToHost(host.data(), pos_off));
  kvcache::Span span;
  span.header.model_fingerprint = cache.device_codec_->options().model_fingerprint;
  span.header.policy = policy.ToString();
  span.header.geometry = {layers, heads, hd, s};
  span.header.first_position = first_position;
  span.header.span_index = first_position / s;
  span.heads.resize(blocks);
  device.heads.resize(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    kvcache::EntryBlock block;
    block.codec = static_cast<kvcache::Codec>(codec);
    block.group_size = group_size;
    block.head_dim = hd;
    block.positions = positions;
    block.log_counts.assign(n, 0.0f);
    block.key_data.assign(host.begin() + b * codes, host.begin() + (b + 1) * codes);
    block.value_data.assign(host.begin() + vd_off + b * codes, host.begin() + vd_off + (b + 1) * codes);
    const auto* kp = reinterpret_cast<const uint16_t*>(host.data() + kp_off) + b * kpc;
    const auto* vp = reinterpret_cast<const uint16_t*>(host.data() + vp_off) + b * vpc;
    block.key_params.assign(kp, kp + kpc);
    block.value_params.assign(vp, vp + vpc);
    span.heads[b].blocks.push_back(std::move(block));

    kernels::SpanBlockView v;  // an empty block's pointers stay null, as CompressSpan's upload leaves them
    v.codec = codec;
    v.group_size = group_size;
    v.num_entries = n;
    v.head_dim = hd;
    if (n > 0) {
      v.key_data = base + b * codes;
      v.value_data = base + vd_off + b * codes;
      v.key_params = quantized ? p.key_params + b * kpc : nullptr;
      v.value_params = quantized ? p.value_params + b * vpc : nullptr;
      v.positions = reinterpret_cast<const int32_t*>(base + pos_off);
    }
    device.heads[b].push_back(v);
  }
  RETURN_IF_ERROR(kvcache::ValidateSpan(span));
  *out = std::move(span);
  return device;
}

absl::Status GpuKvCache::EnsureDense(int tokens) {
  GpuKvCache& cache = *this;
  if (tokens <= cache.dense_capacity_) return absl::OkStatus();
  const int grown = std::min(cache.capacity_, std::max(tokens, 2 * cache.dense_capacity_));
  const int used = cache.num_tokens_ - cache.num_compressed_tokens();
  const int64_t hd = cache.head_dim_;
  const int64_t layer_floats = int64_t{cache.num_kv_heads_} * grown * hd;
  kernels::DeviceBuffer k, v;
  RETURN_IF_ERROR(k.Reserve(layer_floats * cache.num_layers_ * 4));
  RETURN_IF_ERROR(v.Reserve(layer_floats * cache.num_layers_ * 4));
  for (int l = 0; l < cache.num_layers_; ++l) {
    for (int h = 0; h < cache.num_kv_heads_; ++h) {
      const int64_t to = (l * layer_floats + int64_t{h} * grown * hd) * 4;
      const int64_t from = (l * cache.layer_floats_ + int64_t{h} * cache.dense_capacity_ * hd) * 4;
      RETURN_IF_ERROR(k.CopyFromDevice(cache.k_, used * hd * 4, to, from));
      RETURN_IF_ERROR(v.CopyFromDevice(cache.v_, used * hd * 4, to, from));
    }
  }
  cache.k_ = std::move(k);
  cache.v_ = std::move(v);
  cache.dense_capacity_ = grown;
  cache.layer_floats_ = layer_floats;
  return absl::OkStatus();
}

absl::Status GpuKvCache::DropDenseRows(int drop, int used) {
  GpuKvCache& cache = *this;
  const int keep = used - drop;
  if (drop == 0 || keep <= 0) return absl::OkStatus();
  const int64_t hd = cache.head_dim_;
  // Through a scratch copy: the kept rows may overlap their destination.
  kernels::DeviceBuffer scratch;
  RETURN_IF_ERROR(scratch.Reserve(int64_t{keep} * hd * 4));
  for (kernels::DeviceBuffer* buffer : {&cache.k_, &cache.v_}) {
    for (int l = 0; l < cache.num_layers_; ++l) {
      for (int h = 0; h < cache.num_kv_heads_; ++h) {
        const int64_t head = (l * cache.layer_floats_ + int64_t{h} * cache.dense_capacity_ * hd) * 4;
        absl::Status s = scratch.CopyFromDevice(*buffer, keep * hd * 4, 0, head + drop * hd * 4);
        if (s.ok()) s = buffer->CopyFromDevice(scratch, keep * hd * 4, head, 0);
        if (!s.ok()) return absl::InternalError(absl::StrCat("GpuKvCache: moving the tail failed: ", s.message()));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status GpuKvCache::AdoptPrefix(std::vector<kvcache::Span> prefix) {
  if (prefix.empty()) return absl::OkStatus();
  if (compressor_ == nullptr) return absl::InvalidArgumentError("GpuKvCache: a dense cache has no span prefix");
  if (num_tokens_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GpuKvCache: a prefix into a cache of ", num_tokens_, " tokens"));
  }
  RETURN_IF_ERROR(kvcache::CheckPrefixSpans(prefix, {num_layers_, num_kv_heads_, head_dim_, span_tokens_}, capacity_,
                                            "GpuKvCache::AdoptPrefix"));
  std::vector<DeviceSpan> device(prefix.size());
  for (size_t i = 0; i < prefix.size(); ++i) {
    ASSIGN_OR_RETURN(device[i], UploadSpan(prefix[i]));
  }
  spans_ = std::move(prefix);
  device_spans_ = std::move(device);
  num_tokens_ = num_compressed_tokens();
  return absl::OkStatus();
}

absl::StatusOr<model::DenseRows> GpuKvCache::ExportDenseRows() const {
  model::DenseRows rows;
  rows.first_position = num_compressed_tokens();
  rows.num_tokens = num_tokens_ - rows.first_position;
  rows.num_layers = num_layers_;
  rows.num_kv_heads = num_kv_heads_;
  rows.num_heads = num_heads_;
  rows.head_dim = head_dim_;
  const int n = rows.num_tokens, hd = head_dim_;
  rows.k.resize(int64_t{num_layers_} * n * num_kv_heads_ * hd);
  rows.v.resize(rows.k.size());
  // Device [layer][kv head][token][channel] -> rows' [layer][token][kv head][channel].
  std::vector<float> head_rows(int64_t{n} * hd);
  for (int l = 0; l < num_layers_ && n > 0; ++l) {
    for (int h = 0; h < num_kv_heads_; ++h) {
      const int64_t src = (l * layer_floats_ + int64_t{h} * dense_capacity_ * hd) * 4;
      for (auto [buffer, out] : {std::pair{&k_, &rows.k}, std::pair{&v_, &rows.v}}) {
        RETURN_IF_ERROR(buffer->CopyToHost(head_rows.data(), int64_t{n} * hd * 4, src));
        for (int t = 0; t < n; ++t) {
          std::copy_n(&head_rows[int64_t{t} * hd], hd, &(*out)[((int64_t{l} * n + t) * num_kv_heads_ + h) * hd]);
        }
      }
    }
  }
  return rows;
}

absl::Status GpuKvCache::ImportDenseRows(const model::DenseRows& rows) {
  RETURN_IF_ERROR(model::CheckDenseRows(rows, num_layers_, num_kv_heads_, num_heads_, head_dim_, false));
  if (rows.first_position != num_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("GpuKvCache: rows at position ", rows.first_position,
                                                   " into a cache of ", num_tokens_, " tokens"));
  }
  const int n = rows.num_tokens, hd = head_dim_;
  if (compressor_ != nullptr && (num_tokens_ != num_compressed_tokens() || n >= span_tokens_)) {
    return absl::InvalidArgumentError(absl::StrCat("GpuKvCache: ", n, " rows into a tail of ",
                                                   num_tokens_ - num_compressed_tokens(),
                                                   " tokens; want an empty tail and fewer than a span of ",
                                                   span_tokens_));
  }
  if (n > capacity_ - num_tokens_) {
    return absl::ResourceExhaustedError(absl::StrCat("GpuKvCache: ", num_tokens_, " + ", n,
                                                     " tokens exceed the capacity of ", capacity_));
  }
  const int used = num_tokens_ - num_compressed_tokens();
  RETURN_IF_ERROR(EnsureDense(used + n));
  std::vector<float> head_rows(int64_t{n} * hd);
  for (int l = 0; l < num_layers_ && n > 0; ++l) {
    for (int h = 0; h < num_kv_heads_; ++h) {
      const int64_t dst = (l * layer_floats_ + (int64_t{h} * dense_capacity_ + used) * hd) * 4;
      for (auto [buffer, in] : {std::pair{&k_, &rows.k}, std::pair{&v_, &rows.v}}) {
        for (int t = 0; t < n; ++t) {
          std::copy_n(&(*in)[((int64_t{l} * n + t) * num_kv_heads_ + h) * hd], hd, &head_rows[int64_t{t} * hd]);
        }
        RETURN_IF_ERROR(buffer->CopyFromHost(head_rows.data(), int64_t{n} * hd * 4, dst));
      }
    }
  }
  num_tokens_ += n;
  return absl::OkStatus();
}

}  // namespace kvspan::gpu
