#include "kvcache/span.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/memory_bytes.h"
#include "common/status_macros.h"
#include "kvcache/internal/block_checks.h"
#include "kvcache/internal/span_checks.h"

namespace kvspan::kvcache {

int HeadEntries::num_entries() const {
  int n = 0;
  for (const EntryBlock& b : blocks) n += b.num_entries();
  return n;
}

int64_t SpanMemoryBytes(const Span& span) {
  int64_t bytes = StringHeapBytes(span.header.model_fingerprint) + StringHeapBytes(span.header.policy) +
                  CapacityBytes(span.heads);
  for (const HeadEntries& head : span.heads) {
    bytes += CapacityBytes(head.blocks);
    for (const EntryBlock& block : head.blocks) bytes += BlockMemoryBytes(block);
  }
  return bytes;
}

const HeadEntries& Span::resolved_head(int layer, int kv_head) const {
  const HeadEntries& h = head(layer, kv_head);
  return h.shared_from_layer == kNotShared ? h : head(h.shared_from_layer, kv_head);
}

const EntryBlock& Span::key_block(int layer, int kv_head, int b) const {
  const EntryBlock& block = resolved_head(layer, kv_head).blocks[b];
  return block.owns_keys() ? block : head(block.source_layer, kv_head).blocks[b];
}

const EntryBlock& Span::value_block(int layer, int kv_head, int b) const {
  const EntryBlock& block = resolved_head(layer, kv_head).blocks[b];
  return block.owns_values() ? block : head(block.source_layer, kv_head).blocks[b];
}

namespace {

// Multiplies row e of the [n, D] matrix `x` by scales[e] (fp16), when scales is not empty.
void ApplyRowScales(const std::vector<uint16_t>& scales, int head_dim, std::vector<float>* x) {
  for (size_t e = 0; e < scales.size(); ++e) {
    const float f = HalfToFloat(scales[e]);
    for (int d = 0; d < head_dim; ++d) (*x)[e * head_dim + d] *= f;
  }
}

}  // namespace

std::vector<float> DecodeSpanBlockKeys(const Span& span, int layer, int kv_head, int b) {
  const EntryBlock& block = span.resolved_head(layer, kv_head).blocks[b];
  std::vector<float> keys = DecodeBlockKeys(span.key_block(layer, kv_head, b));
  ApplyRowScales(block.key_scales, block.head_dim, &keys);
  return keys;
}

std::vector<float> DecodeSpanBlockValues(const Span& span, int layer, int kv_head, int b) {
  const EntryBlock& block = span.resolved_head(layer, kv_head).blocks[b];
  std::vector<float> values = DecodeBlockValues(span.value_block(layer, kv_head, b));
  ApplyRowScales(block.value_scales, block.head_dim, &values);
  return values;
}

namespace internal {

absl::Status CheckDenseView(const SpanGeometry& g, const DenseKvView& kv, const char* who) {
  if (kv.keys == nullptr || kv.values == nullptr || kv.token_stride < g.head_dim || kv.head_stride < 0 ||
      kv.layer_stride < 0) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": null K/V or bad strides"));
  }
  return absl::OkStatus();
}

absl::Status CheckHeader(const SpanHeader& header, absl::StatusCode code) {
  if (absl::Status s = ValidateGeometry(header.geometry); !s.ok()) {
    return absl::Status(code, s.message());
  }
  if (header.model_fingerprint.size() > kMaxLabelBytes ||
      header.policy.size() > kMaxLabelBytes) {
    return absl::Status(code, absl::StrCat("span header: fingerprint or policy longer than ",
                                           kMaxLabelBytes, " bytes"));
  }
  if (header.first_position < 0 || header.span_index < 0 ||
      header.first_position >
          std::numeric_limits<int32_t>::max() - header.geometry.span_tokens) {
    return absl::Status(code, absl::StrCat("span header: first_position ",
                                           header.first_position, " / span_index ",
                                           header.span_index, " out of range"));
  }
  return absl::OkStatus();
}

namespace {

// The cross-block rules of block b of head (layer, kv_head) when it is shared (span.h).
absl::Status CheckSharedBlock(const Span& span, int layer, int kv_head, int b,
                              absl::StatusCode code) {
  const EntryBlock& block = span.head(layer, kv_head).blocks[b];
  if (!block.is_shared()) return absl::OkStatus();
  const std::string where = absl::StrCat("head (", layer, ", ", kv_head, ") block ", b, ": ");
  if (block.source_layer < 0 || block.source_layer >= layer) {
    return absl::Status(code, absl::StrCat(where, "source layer ", block.source_layer,
                                           " is not an earlier layer"));
  }
  const HeadEntries& source = span.head(block.source_layer, kv_head);
  if (source.shared_from_layer != kNotShared) {
    return absl::Status(code, absl::StrCat(where, "source head (", block.source_layer, ", ",
                                           kv_head, ") is a shared head record"));
  }
  if (static_cast<size_t>(b) >= source.blocks.size()) {
    return absl::Status(code, absl::StrCat(where, "source head (", block.source_layer, ", ",
                                           kv_head, ") has only ", source.blocks.size(),
                                           " blocks"));
  }
  const EntryBlock& src = source.blocks[b];
  if (src.is_shared()) {
    return absl::Status(code, absl::StrCat(where, "source block is itself shared (a chain)"));
  }
  if (src.codec != block.codec || src.group_size != block.group_size ||
      src.positions != block.positions || src.log_counts != block.log_counts) {
    return absl::Status(code, absl::StrCat(where, "codec, group size, positions or log counts "
                                                  "differ from the source block's"));
  }
  return absl::OkStatus();
}

absl::Status CheckHead(const Span& span, int layer, int kv_head, absl::StatusCode code) {
  const SpanGeometry& g = span.header.geometry;
  const HeadEntries& h = span.head(layer, kv_head);
  const std::string where = absl::StrCat("head (", layer, ", ", kv_head, "): ");
  if (h.shared_from_layer != kNotShared) {
    if (h.shared_from_layer < 0 || h.shared_from_layer >= layer) {
      return absl::Status(code, absl::StrCat(where, "shares layer ", h.shared_from_layer,
                                             ", which is not an earlier layer"));
    }
    if (!h.blocks.empty()) {
      return absl::Status(code, absl::StrCat(where, "is shared but has blocks"));
    }
    const HeadEntries& source = span.head(h.shared_from_layer, kv_head);
    if (source.shared_from_layer != kNotShared) {
      return absl::Status(code, absl::StrCat(where, "shares layer ", h.shared_from_layer,
                                             ", which is itself shared"));
    }
    for (const EntryBlock& b : source.blocks) {
      if (b.is_shared()) {
        return absl::Status(code, absl::StrCat(where, "shares layer ", h.shared_from_layer,
                                               ", which holds a shared block"));
      }
    }
    return absl::OkStatus();
  }
  if (h.blocks.size() > kMaxBlocksPerHead) {
    return absl::Status(code, absl::StrCat(where, h.blocks.size(), " blocks > ",
                                           kMaxBlocksPerHead));
  }
  const int64_t end_position = int64_t{span.header.first_position} + g.span_tokens;
  int64_t num_entries = 0;
  double count_sum = 0.0;
  for (const EntryBlock& b : h.blocks) {
    if (b.head_dim != g.head_dim) {
      return absl::Status(code, absl::StrCat(where, "block head_dim ", b.head_dim,
                                             " != geometry head_dim ", g.head_dim));
    }
    RETURN_IF_ERROR(CheckBlock(b, code));
    RETURN_IF_ERROR(CheckSharedBlock(span, layer, kv_head,
                                     static_cast<int>(&b - h.blocks.data()), code));
    for (int32_t p : b.positions) {
      if (p < span.header.first_position || p >= end_position) {
        return absl::Status(code, absl::StrCat(where, "position ", p, " outside [",
                                               span.header.first_position, ", ",
                                               end_position, ")"));
      }
    }
    num_entries += b.num_entries();
    for (float lc : b.log_counts) count_sum += std::exp(static_cast<double>(lc));
  }
  if (num_entries > g.span_tokens) {
    return absl::Status(code, absl::StrCat(where, num_entries, " entries > span_tokens ",
                                           g.span_tokens));
  }
  if (count_sum > g.span_tokens * (1.0 + kCountSlack)) {
    return absl::Status(code, absl::StrCat(where, "entries stand for ", count_sum,
                                           " tokens > span_tokens ", g.span_tokens));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckSpan(const Span& span, absl::StatusCode code) {
  RETURN_IF_ERROR(CheckHeader(span.header, code));
  const SpanGeometry& g = span.header.geometry;
  if (span.heads.size() != static_cast<size_t>(g.num_heads_total())) {
    return absl::Status(code, absl::StrCat("span has ", span.heads.size(), " heads, geometry ",
                                           g.num_heads_total()));
  }
  for (int l = 0; l < g.num_layers; ++l) {
    for (int h = 0; h < g.num_kv_heads; ++h) RETURN_IF_ERROR(CheckHead(span, l, h, code));
  }
  return absl::OkStatus();
}

}  // namespace internal

absl::Status CheckSpanIdentity(const Span& span, absl::string_view model_fingerprint, absl::string_view policy,
                               const SpanGeometry& geometry, int64_t index) {
  const SpanHeader& h = span.header;
  if (h.model_fingerprint != model_fingerprint) {
    return absl::InvalidArgumentError(
        absl::StrCat("model fingerprint \"", h.model_fingerprint, "\", want \"", model_fingerprint, "\""));
  }
  if (h.policy != policy) {
    return absl::InvalidArgumentError(absl::StrCat("policy \"", h.policy, "\", want \"", policy, "\""));
  }
  if (h.geometry != geometry) return absl::InvalidArgumentError("geometry differs from the reader's");
  if (h.span_index != index || h.first_position != index * geometry.span_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("span_index ", h.span_index, " first_position ",
                                                   h.first_position, ", want span ", index));
  }
  return absl::OkStatus();
}

absl::Status ValidateSpan(const Span& span) {
  return internal::CheckSpan(span, absl::StatusCode::kInvalidArgument);
}

absl::StatusOr<Span> Span::FromDense(const SpanHeader& header, const CodecSpec& codec,
                                     const DenseKvView& kv) {
  RETURN_IF_ERROR(internal::CheckHeader(header, absl::StatusCode::kInvalidArgument));
  const SpanGeometry& g = header.geometry;
  RETURN_IF_ERROR(internal::CheckDenseView(g, kv, "FromDense"));
  Span span;
  span.header = header;
  span.heads.resize(g.num_heads_total());
  std::vector<int32_t> positions(g.span_tokens);
  for (int t = 0; t < g.span_tokens; ++t) positions[t] = header.first_position + t;
  const std::vector<float> log_counts(g.span_tokens, 0.0f);
  std::vector<float> keys(static_cast<size_t>(g.span_tokens) * g.head_dim);
  std::vector<float> values(keys.size());
  for (int l = 0; l < g.num_layers; ++l) {
    for (int h = 0; h < g.num_kv_heads; ++h) {
      const int64_t base = l * kv.layer_stride + h * kv.head_stride;
      for (int t = 0; t < g.span_tokens; ++t) {
        for (int d = 0; d < g.head_dim; ++d) {
          keys[static_cast<size_t>(t) * g.head_dim + d] = kv.keys[base + t * kv.token_stride + d];
          values[static_cast<size_t>(t) * g.head_dim + d] =
              kv.values[base + t * kv.token_stride + d];
        }
      }
      DenseEntries entries{g.head_dim, positions, log_counts, keys, values};
      ASSIGN_OR_RETURN(EntryBlock block, EncodeBlock(codec, entries));
      span.head(l, h).blocks.push_back(std::move(block));
    }
  }
  return span;
}

absl::StatusOr<HeadEntries> EncodeMixedHead(const MixedPrecisionSpec& spec,
                                            const DenseEntries& entries,
                                            absl::Span<const uint8_t> important) {
  const size_t n = entries.positions.size();
  if (important.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("important has ", important.size(),
                                                   " flags for ", n, " entries"));
  }
  if (entries.head_dim < 1 || entries.log_counts.size() != n ||
      entries.keys.size() != n * entries.head_dim ||
      entries.values.size() != n * entries.head_dim) {
    return absl::InvalidArgumentError("EncodeMixedHead: entry arrays disagree");
  }
  HeadEntries head;
  for (const uint8_t want : {uint8_t{1}, uint8_t{0}}) {
    std::vector<int32_t> positions;
    std::vector<float> log_counts, keys, values;
    for (size_t i = 0; i < n; ++i) {
      if ((important[i] != 0) != (want != 0)) continue;
      positions.push_back(entries.positions[i]);
      log_counts.push_back(entries.log_counts[i]);
      const size_t row = i * entries.head_dim;
      keys.insert(keys.end(), entries.keys.begin() + row,
                  entries.keys.begin() + row + entries.head_dim);
      values.insert(values.end(), entries.values.begin() + row,
                    entries.values.begin() + row + entries.head_dim);
    }
    DenseEntries part{entries.head_dim, positions, log_counts, keys, values};
    ASSIGN_OR_RETURN(EntryBlock block, EncodeBlock(want ? spec.high : spec.low, part));
    head.blocks.push_back(std::move(block));
  }
  return head;
}

}  // namespace kvspan::kvcache
