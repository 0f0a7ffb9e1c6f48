#include "kvcache/entry_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/memory_bytes.h"
#include "kvcache/internal/block_checks.h"
#include "kvcache/internal/quantize.h"
#include "kvcache/span_geometry.h"

namespace kvspan::kvcache {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int Levels(Codec codec) { return 1 << CodecBits(codec); }

// Encodes the [n, D] matrix `x` as 16-bit rows.
void EncodeFloat16(Codec codec, absl::Span<const float> x, std::vector<uint8_t>* out) {
  out->resize(x.size() * 2);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t h = codec == Codec::kBF16 ? FloatToBf16(x[i]) : FloatToHalf(x[i]);
    std::memcpy(out->data() + 2 * i, &h, 2);  // little-endian host (x86-64, aarch64)
  }
}

// Keys: groups of G consecutive entries per channel.
void QuantizeKeys(Codec codec, int group_size, int n, int head_dim, absl::Span<const float> x,
                  EntryBlock* block) {
  const int bits = CodecBits(codec);
  const int64_t row_bytes = CodeRowBytes(codec, head_dim);
  block->key_data.assign(n * row_bytes, 0);
  block->key_params.assign(KeyParamCount(codec, group_size, n, head_dim), 0);
  for (int g = 0; g * group_size < n; ++g) {
    const int begin = g * group_size;
    const int end = std::min(n, begin + group_size);
    for (int d = 0; d < head_dim; ++d) {
      float lo = x[begin * head_dim + d], hi = lo;
      for (int e = begin + 1; e < end; ++e) {
        lo = std::min(lo, x[e * head_dim + d]);
        hi = std::max(hi, x[e * head_dim + d]);
      }
      const internal::GroupParams p = internal::ChooseGroupParams(lo, hi, Levels(codec));
      block->key_params[2 * (g * head_dim + d)] = p.scale;
      block->key_params[2 * (g * head_dim + d) + 1] = p.zero;
      for (int e = begin; e < end; ++e) {
        internal::PutCode(block->key_data.data() + e * row_bytes, d, bits,
                          internal::QuantizeValue(x[e * head_dim + d], p, Levels(codec)));
      }
    }
  }
}

// Values: groups of G consecutive channels per entry.
void QuantizeValues(Codec codec, int group_size, int n, int head_dim,
                    absl::Span<const float> x, EntryBlock* block) {
  const int bits = CodecBits(codec);
  const int64_t row_bytes = CodeRowBytes(codec, head_dim);
  const int64_t groups_per_row = CeilDiv(head_dim, group_size);
  block->value_data.assign(n * row_bytes, 0);
  block->value_params.assign(ValueParamCount(codec, group_size, n, head_dim), 0);
  for (int e = 0; e < n; ++e) {
    const float* row = x.data() + static_cast<int64_t>(e) * head_dim;
    for (int g = 0; g * group_size < head_dim; ++g) {
      const int begin = g * group_size;
      const int end = std::min(head_dim, begin + group_size);
      const auto [lo, hi] = std::minmax_element(row + begin, row + end);
      const internal::GroupParams p = internal::ChooseGroupParams(*lo, *hi, Levels(codec));
      block->value_params[2 * (e * groups_per_row + g)] = p.scale;
      block->value_params[2 * (e * groups_per_row + g) + 1] = p.zero;
      for (int d = begin; d < end; ++d) {
        internal::PutCode(block->value_data.data() + e * row_bytes, d, bits,
                          internal::QuantizeValue(row[d], p, Levels(codec)));
      }
    }
  }
}

absl::Status CheckInputs(const CodecSpec& spec, const DenseEntries& in) {
  if (!IsKnownCodec(static_cast<uint8_t>(spec.codec))) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown codec id ", static_cast<int>(spec.codec)));
  }
  if (IsQuantized(spec.codec) && (spec.group_size < 1 || spec.group_size > kMaxGroupSize)) {
    return absl::InvalidArgumentError(absl::StrCat("group_size ", spec.group_size,
                                                   " is outside [1, ", kMaxGroupSize, "]"));
  }
  if (in.head_dim < 1 || in.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", in.head_dim, " out of range"));
  }
  const size_t n = in.positions.size();
  if (in.log_counts.size() != n || in.keys.size() != n * in.head_dim ||
      in.values.size() != n * in.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entry arrays disagree: ", n, " positions, ", in.log_counts.size(), " log counts, ",
        in.keys.size(), " key and ", in.values.size(), " value floats for head_dim ",
        in.head_dim));
  }
  const float limit = spec.codec == Codec::kBF16 ? 3.0e38f : kFp16Max;
  for (absl::Span<const float> x : {in.keys, in.values}) {
    for (float v : x) {
      if (!std::isfinite(v) || std::fabs(v) > limit) {
        return absl::InvalidArgumentError(absl::StrCat(
            "key/value ", v, " is not finite or exceeds the ", CodecName(spec.codec),
            " range ", limit));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsKnownCodec(uint8_t id) { return id >= 1 && id <= 5; }

bool IsQuantized(Codec codec) {
  return codec == Codec::kInt8 || codec == Codec::kInt4 || codec == Codec::kInt2;
}

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kBF16: return "bf16";
    case Codec::kFP16: return "fp16";
    case Codec::kInt8: return "int8";
    case Codec::kInt4: return "int4";
    case Codec::kInt2: return "int2";
  }
  return "unknown";
}

absl::StatusOr<Codec> CodecByName(absl::string_view name) {
  for (Codec c : {Codec::kBF16, Codec::kFP16, Codec::kInt8, Codec::kInt4, Codec::kInt2}) {
    if (name == CodecName(c)) return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown codec '", name, "'"));
}

int CodecBits(Codec codec) {
  switch (codec) {
    case Codec::kBF16:
    case Codec::kFP16: return 16;
    case Codec::kInt8: return 8;
    case Codec::kInt4: return 4;
    case Codec::kInt2: return 2;
  }
  return 0;
}

int64_t CodeRowBytes(Codec codec, int head_dim) {
  return CeilDiv(static_cast<int64_t>(head_dim) * CodecBits(codec), 8);
}

int64_t KeyParamCount(Codec codec, int group_size, int num_entries, int head_dim) {
  if (!IsQuantized(codec)) return 0;
  return 2 * CeilDiv(num_entries, group_size) * head_dim;
}

int64_t ValueParamCount(Codec codec, int group_size, int num_entries, int head_dim) {
  if (!IsQuantized(codec)) return 0;
  return 2 * static_cast<int64_t>(num_entries) * CeilDiv(head_dim, group_size);
}

int64_t PayloadBytes(Codec codec, int group_size, int num_entries, int head_dim) {
  return 2 * num_entries * CodeRowBytes(codec, head_dim) +
         2 * (KeyParamCount(codec, group_size, num_entries, head_dim) +
              ValueParamCount(codec, group_size, num_entries, head_dim));
}

absl::StatusOr<EntryBlock> EncodeBlock(const CodecSpec& spec, const DenseEntries& in) {
  if (absl::Status s = CheckInputs(spec, in); !s.ok()) return s;
  EntryBlock block;
  block.codec = spec.codec;
  block.group_size = IsQuantized(spec.codec) ? spec.group_size : 0;
  block.head_dim = in.head_dim;
  block.positions.assign(in.positions.begin(), in.positions.end());
  block.log_counts.assign(in.log_counts.begin(), in.log_counts.end());
  const int n = block.num_entries();
  if (IsQuantized(spec.codec)) {
    QuantizeKeys(spec.codec, spec.group_size, n, in.head_dim, in.keys, &block);
    QuantizeValues(spec.codec, spec.group_size, n, in.head_dim, in.values, &block);
  } else {
    EncodeFloat16(spec.codec, in.keys, &block.key_data);
    EncodeFloat16(spec.codec, in.values, &block.value_data);
  }
  // Positions and log counts are checked with the block's own rules.
  if (absl::Status s = internal::CheckBlock(block, absl::StatusCode::kInvalidArgument); !s.ok()) {
    return s;
  }
  return block;
}

absl::Status ValidateBlock(const EntryBlock& block) {
  return internal::CheckBlock(block, absl::StatusCode::kInvalidArgument);
}

namespace {

std::vector<float> DecodeFloat16(const EntryBlock& block, const std::vector<uint8_t>& data) {
  std::vector<float> out(data.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, data.data() + 2 * i, 2);
    out[i] = block.codec == Codec::kBF16 ? Bf16ToFloat(h) : HalfToFloat(h);
  }
  return out;
}

}  // namespace

std::vector<float> DecodeBlockKeys(const EntryBlock& block) {
  if (!IsQuantized(block.codec)) return DecodeFloat16(block, block.key_data);
  const int n = block.num_entries(), dim = block.head_dim, bits = CodecBits(block.codec);
  const int64_t row_bytes = CodeRowBytes(block.codec, dim);
  std::vector<float> out(static_cast<size_t>(n) * dim);
  for (int e = 0; e < n; ++e) {
    const int64_t g = e / block.group_size;
    for (int d = 0; d < dim; ++d) {
      const float scale = HalfToFloat(block.key_params[2 * (g * dim + d)]);
      const float zero = HalfToFloat(block.key_params[2 * (g * dim + d) + 1]);
      const uint32_t q = internal::GetCode(block.key_data.data() + e * row_bytes, d, bits);
      out[static_cast<size_t>(e) * dim + d] = internal::DequantizeCode(q, scale, zero);
    }
  }
  return out;
}

int64_t BlockMemoryBytes(const EntryBlock& b) {
  return CapacityBytes(b.positions) + CapacityBytes(b.log_counts) + CapacityBytes(b.key_data) +
         CapacityBytes(b.value_data) + CapacityBytes(b.key_params) + CapacityBytes(b.value_params) +
         CapacityBytes(b.key_scales) + CapacityBytes(b.value_scales);
}

std::vector<float> DecodeBlockValues(const EntryBlock& block) {
  if (!IsQuantized(block.codec)) return DecodeFloat16(block, block.value_data);
  const int n = block.num_entries(), dim = block.head_dim, bits = CodecBits(block.codec);
  const int64_t row_bytes = CodeRowBytes(block.codec, dim);
  const int64_t groups_per_row = CeilDiv(dim, block.group_size);
  std::vector<float> out(static_cast<size_t>(n) * dim);
  for (int e = 0; e < n; ++e) {
    for (int d = 0; d < dim; ++d) {
      const int64_t p = 2 * (e * groups_per_row + d / block.group_size);
      const float scale = HalfToFloat(block.value_params[p]);
      const float zero = HalfToFloat(block.value_params[p + 1]);
      const uint32_t q = internal::GetCode(block.value_data.data() + e * row_bytes, d, bits);
      out[static_cast<size_t>(e) * dim + d] = internal::DequantizeCode(q, scale, zero);
    }
  }
  return out;
}

}  // namespace kvspan::kvcache
