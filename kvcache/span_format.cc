#include "kvcache/span_format.h"

#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kvcache/internal/byte_reader.h"
#include "kvcache/internal/span_checks.h"
#include "xxhash.h"

namespace kvspan::kvcache {

static_assert(std::endian::native == std::endian::little,
              "the span format is little-endian and is copied with memcpy");

namespace {

constexpr int64_t kOwnedHeadBytes = 2;   // kind, num_blocks
constexpr int64_t kSharedHeadBytes = 5;  // kind, source layer (u32)
constexpr int64_t kBlockHeaderBytes = 10; // codec, flags, group_size (u32), num_entries (u32)
constexpr int64_t kSharedBlockHeaderBytes = 6;  // codec byte 0, flags, source layer (u32)
constexpr uint8_t kKnownBlockFlags = kBlockImplicitPositions | kBlockZeroLogCounts;
constexpr uint8_t kKnownSharedBlockFlags =
    kBlockShared | kBlockSharesValues | kBlockKeyScales | kBlockValueScales;

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
void PutArray(std::string* out, const std::vector<T>& v) {
  if (!v.empty()) out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// The canonical flags of `b` in a span starting at `first_position`: a flag is set exactly
// when the array it replaces is redundant.
uint8_t BlockFlags(const EntryBlock& b, int32_t first_position) {
  uint8_t flags = kBlockImplicitPositions | kBlockZeroLogCounts;
  for (int i = 0; i < b.num_entries(); ++i) {
    if (b.positions[i] != first_position + i) flags &= ~kBlockImplicitPositions;
    if (std::bit_cast<uint32_t>(b.log_counts[i]) != 0) flags &= ~kBlockZeroLogCounts;
  }
  return flags;
}

// The flags of a shared block: scales are stored exactly when present (an all-ones array
// is stored as absent: ValidateSpan rejects it in memory).
uint8_t SharedBlockFlags(const EntryBlock& b) {
  uint8_t flags = kBlockShared;
  if (b.shares == BlockShares::kKeysAndValues) flags |= kBlockSharesValues;
  if (!b.key_scales.empty()) flags |= kBlockKeyScales;
  if (!b.value_scales.empty()) flags |= kBlockValueScales;
  return flags;
}

int64_t SharedBlockBytes(const EntryBlock& b) {
  const int64_t n = b.num_entries();
  int64_t bytes = kSharedBlockHeaderBytes + 2 * static_cast<int64_t>(b.key_scales.size()) +
                  2 * static_cast<int64_t>(b.value_scales.size());
  if (b.owns_values()) {
    bytes += n * CodeRowBytes(b.codec, b.head_dim) +
             2 * ValueParamCount(b.codec, b.group_size, b.num_entries(), b.head_dim);
  }
  return bytes;
}

int64_t BlockBytes(const EntryBlock& b, int32_t first_position) {
  if (b.is_shared()) return SharedBlockBytes(b);
  const uint8_t flags = BlockFlags(b, first_position);
  const int64_t n = b.num_entries();
  return kBlockHeaderBytes + (flags & kBlockImplicitPositions ? 0 : 2 * n) +
         (flags & kBlockZeroLogCounts ? 0 : 4 * n) +
         PayloadBytes(b.codec, b.group_size, b.num_entries(), b.head_dim);
}

absl::Status Truncated(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("span: truncated or oversized ", what));
}

// An enum value this reader does not know: from a newer minor version it is a feature we
// lack (Unimplemented), otherwise the bytes are corrupt (DataLoss).
absl::Status UnknownEnum(uint16_t minor, absl::string_view what, int value) {
  const std::string msg = absl::StrCat("span: unknown ", what, " ", value);
  if (minor > kSpanVersionMinor) return absl::UnimplementedError(msg);
  return absl::DataLossError(msg);
}

// Reads a u32 that must lie in [lo, hi].
absl::Status ReadBounded(internal::ByteReader& r, absl::string_view what, uint32_t lo,
                         uint32_t hi, int* out) {
  uint32_t v;
  if (!r.Read(&v)) return Truncated(what);
  if (v < lo || v > hi) {
    return absl::DataLossError(
        absl::StrCat("span: ", what, " = ", v, " is outside [", lo, ", ", hi, "]"));
  }
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

// Where a block sits: its head (layer, kv_head), its index in the head, and the span
// parsed so far (every earlier layer's heads are complete).
struct BlockSite {
  const Span* span;
  int layer;
  int kv_head;
  int index;
};

// The rest of a shared block record, after its codec byte and flags (docs/span-format.md).
absl::Status ParseSharedBlock(internal::ByteReader& r, const BlockSite& site, uint8_t codec,
                              uint8_t flags, uint16_t minor, EntryBlock* b) {
  if (minor < kSpanVersionMinorShared) {
    return absl::DataLossError("span: shared block in a span of minor version 0");
  }
  if (flags & ~kKnownSharedBlockFlags) return UnknownEnum(minor, "shared block flags", flags);
  if (codec != kSharedBlockCodecByte) {
    return absl::DataLossError(absl::StrCat("span: shared block with codec byte ", int{codec}));
  }
  if ((flags & kBlockValueScales) && !(flags & kBlockSharesValues)) {
    return absl::DataLossError("span: value scales on a shared block that owns its values");
  }
  if (site.layer == 0) return absl::DataLossError("span: shared block in layer 0");
  RETURN_IF_ERROR(ReadBounded(r, "shared block source layer", 0, site.layer - 1,
                              &b->source_layer));
  const HeadEntries& source = site.span->head(b->source_layer, site.kv_head);
  if (source.shared_from_layer != kNotShared ||
      static_cast<size_t>(site.index) >= source.blocks.size() ||
      source.blocks[site.index].is_shared()) {
    return absl::DataLossError(absl::StrCat(
        "span: shared block ", site.index, " of head (", site.layer, ", ", site.kv_head,
        ") has no owned source block in layer ", b->source_layer));
  }
  const EntryBlock& src = source.blocks[site.index];
  b->shares = (flags & kBlockSharesValues) ? BlockShares::kKeysAndValues : BlockShares::kKeys;
  b->codec = src.codec;
  b->group_size = src.group_size;
  b->head_dim = src.head_dim;
  b->positions = src.positions;
  b->log_counts = src.log_counts;
  const size_t n = src.positions.size();
  if (((flags & kBlockKeyScales) && !r.ReadArray(n, &b->key_scales)) ||
      ((flags & kBlockValueScales) && !r.ReadArray(n, &b->value_scales))) {
    return Truncated("shared block scales");
  }
  if (b->owns_values() &&
      (!r.ReadArray(n * CodeRowBytes(b->codec, b->head_dim), &b->value_data) ||
       !r.ReadArray(ValueParamCount(b->codec, b->group_size, n, b->head_dim),
                    &b->value_params))) {
    return Truncated("shared block values");
  }
  return absl::OkStatus();
}

absl::Status ParseBlock(internal::ByteReader& r, const BlockSite& site, uint16_t minor,
                        EntryBlock* b) {
  const SpanHeader& hd = site.span->header;
  const SpanGeometry& g = hd.geometry;
  uint8_t codec, flags;
  if (!r.Read(&codec) || !r.Read(&flags)) return Truncated("block header");
  if (flags & kBlockShared) return ParseSharedBlock(r, site, codec, flags, minor, b);
  if (!IsKnownCodec(codec)) return UnknownEnum(minor, "codec id", codec);
  if (flags & ~kKnownBlockFlags) return UnknownEnum(minor, "block flags", flags);
  b->codec = static_cast<Codec>(codec);
  b->head_dim = g.head_dim;
  if (IsQuantized(b->codec)) {
    RETURN_IF_ERROR(ReadBounded(r, "group_size", 1, kMaxGroupSize, &b->group_size));
  } else {
    RETURN_IF_ERROR(ReadBounded(r, "group_size of a 16-bit codec", 0, 0, &b->group_size));
  }
  int n;
  RETURN_IF_ERROR(ReadBounded(r, "num_entries", 0, g.span_tokens, &n));
  const size_t row_bytes = CodeRowBytes(b->codec, g.head_dim);
  std::vector<uint16_t> offsets;
  if (flags & kBlockImplicitPositions) {
    offsets.resize(n);
    for (int i = 0; i < n; ++i) offsets[i] = static_cast<uint16_t>(i);
  } else if (!r.ReadArray(n, &offsets)) {
    return Truncated("block positions");
  }
  // The header bounds first_position + span_tokens by INT32_MAX, so once an offset is
  // below span_tokens the sum cannot overflow.
  b->positions.resize(n);
  for (int i = 0; i < n; ++i) {
    if (offsets[i] >= g.span_tokens) {
      return absl::DataLossError(absl::StrCat("span: position offset ", offsets[i],
                                              " >= span_tokens ", g.span_tokens));
    }
    b->positions[i] = hd.first_position + offsets[i];
  }
  if (flags & kBlockZeroLogCounts) {
    b->log_counts.assign(n, 0.0f);
  } else if (!r.ReadArray(n, &b->log_counts)) {
    return Truncated("block log counts");
  }
  if (BlockFlags(*b, hd.first_position) != flags) {
    return absl::DataLossError(
        "span: non-canonical block (positions or log counts stored explicitly although "
        "they are implicit)");
  }
  if (!r.ReadArray(n * row_bytes, &b->key_data) ||
      !r.ReadArray(KeyParamCount(b->codec, b->group_size, n, g.head_dim), &b->key_params) ||
      !r.ReadArray(n * row_bytes, &b->value_data) ||
      !r.ReadArray(ValueParamCount(b->codec, b->group_size, n, g.head_dim), &b->value_params)) {
    return Truncated("block payload");
  }
  return absl::OkStatus();
}

absl::Status ParseHead(internal::ByteReader& r, const Span& span, int layer, int kv_head,
                       uint16_t minor, HeadEntries* h) {
  uint8_t kind;
  if (!r.Read(&kind)) return Truncated("head kind");
  if (kind == kHeadKindShared) {
    // Range against the layer is checked by CheckSpan; here only the integer range.
    return ReadBounded(r, "shared source layer", 0, kMaxLayers - 1, &h->shared_from_layer);
  }
  if (kind != kHeadKindOwned) return UnknownEnum(minor, "head kind", kind);
  uint8_t num_blocks;
  if (!r.Read(&num_blocks)) return Truncated("num_blocks");
  if (num_blocks > kMaxBlocksPerHead) {
    return absl::DataLossError(absl::StrCat("span: ", int{num_blocks}, " blocks in a head > ",
                                            kMaxBlocksPerHead));
  }
  h->blocks.resize(num_blocks);
  for (int i = 0; i < num_blocks; ++i) {
    RETURN_IF_ERROR(ParseBlock(r, BlockSite{&span, layer, kv_head, i}, minor, &h->blocks[i]));
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t SpanChecksum(absl::string_view body) { return XXH3_64bits(body.data(), body.size()); }

int64_t SerializedSize(const Span& span) {
  int64_t size = kSpanFixedHeaderBytes + 4 + span.header.model_fingerprint.size() + 4 +
                 span.header.policy.size() + kSpanChecksumBytes;
  for (const HeadEntries& h : span.heads) {
    if (h.shared_from_layer != kNotShared) {
      size += kSharedHeadBytes;
      continue;
    }
    size += kOwnedHeadBytes;
    for (const EntryBlock& b : h.blocks) size += BlockBytes(b, span.header.first_position);
  }
  return size;
}

double BytesPerToken(const Span& span) {
  return static_cast<double>(SerializedSize(span)) / span.header.geometry.span_tokens;
}

std::string SerializeSpan(const Span& span) {
  const SpanHeader& hd = span.header;
  std::string out;
  out.reserve(SerializedSize(span));
  bool any_shared = false;
  for (const HeadEntries& h : span.heads) {
    for (const EntryBlock& b : h.blocks) any_shared |= b.is_shared();
  }
  out.append(kSpanMagic, sizeof(kSpanMagic));
  Put<uint16_t>(&out, kSpanVersionMajor);
  // The lowest minor with every feature used (docs/span-format.md "Version rule").
  Put<uint16_t>(&out, any_shared ? kSpanVersionMinorShared : 0);
  Put<uint32_t>(&out, hd.geometry.num_layers);
  Put<uint32_t>(&out, hd.geometry.num_kv_heads);
  Put<uint32_t>(&out, hd.geometry.head_dim);
  Put<uint32_t>(&out, hd.geometry.span_tokens);
  Put<uint32_t>(&out, hd.first_position);
  Put<uint32_t>(&out, hd.span_index);
  Put<uint32_t>(&out, hd.model_fingerprint.size());
  out.append(hd.model_fingerprint);
  Put<uint32_t>(&out, hd.policy.size());
  out.append(hd.policy);
  for (const HeadEntries& h : span.heads) {
    if (h.shared_from_layer != kNotShared) {
      Put<uint8_t>(&out, kHeadKindShared);
      Put<uint32_t>(&out, h.shared_from_layer);
      continue;
    }
    Put<uint8_t>(&out, kHeadKindOwned);
    Put<uint8_t>(&out, h.blocks.size());
    for (const EntryBlock& b : h.blocks) {
      if (b.is_shared()) {
        Put<uint8_t>(&out, kSharedBlockCodecByte);
        Put<uint8_t>(&out, SharedBlockFlags(b));
        Put<uint32_t>(&out, b.source_layer);
        PutArray(&out, b.key_scales);
        PutArray(&out, b.value_scales);
        if (b.owns_values()) {
          PutArray(&out, b.value_data);
          PutArray(&out, b.value_params);
        }
        continue;
      }
      const uint8_t flags = BlockFlags(b, hd.first_position);
      Put<uint8_t>(&out, static_cast<uint8_t>(b.codec));
      Put<uint8_t>(&out, flags);
      Put<uint32_t>(&out, b.group_size);
      Put<uint32_t>(&out, b.num_entries());
      if (!(flags & kBlockImplicitPositions)) {
        for (int32_t p : b.positions) Put<uint16_t>(&out, p - hd.first_position);
      }
      if (!(flags & kBlockZeroLogCounts)) PutArray(&out, b.log_counts);
      PutArray(&out, b.key_data);
      PutArray(&out, b.key_params);
      PutArray(&out, b.value_data);
      PutArray(&out, b.value_params);
    }
  }
  Put<uint64_t>(&out, SpanChecksum(out));
  return out;
}

absl::StatusOr<Span> ParseSpan(absl::string_view bytes) {
  if (bytes.size() < static_cast<size_t>(kSpanFixedHeaderBytes + 8 + kSpanChecksumBytes)) {
    return absl::DataLossError(absl::StrCat("span: ", bytes.size(), " bytes is too short"));
  }
  // The checksum comes first: it sits in the last 8 bytes in every version of the format.
  const absl::string_view body = bytes.substr(0, bytes.size() - kSpanChecksumBytes);
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + body.size(), sizeof(stored));
  if (stored != SpanChecksum(body)) return absl::DataLossError("span: checksum mismatch");

  internal::ByteReader r(body);
  char magic[4];
  uint16_t major, minor;
  if (!r.Read(&magic) || std::memcmp(magic, kSpanMagic, sizeof(magic)) != 0) {
    return absl::DataLossError("span: bad magic");
  }
  if (!r.Read(&major) || !r.Read(&minor)) return Truncated("version");
  if (major != kSpanVersionMajor) {
    return absl::UnimplementedError(absl::StrCat("span: format major version ", major,
                                                 "; this reader knows ", kSpanVersionMajor));
  }
  Span span;
  SpanHeader& hd = span.header;
  SpanGeometry& g = hd.geometry;
  RETURN_IF_ERROR(ReadBounded(r, "num_layers", 1, kMaxLayers, &g.num_layers));
  RETURN_IF_ERROR(ReadBounded(r, "num_kv_heads", 1, kMaxKvHeads, &g.num_kv_heads));
  RETURN_IF_ERROR(ReadBounded(r, "head_dim", 1, kMaxHeadDim, &g.head_dim));
  RETURN_IF_ERROR(ReadBounded(r, "span_tokens", 1, kMaxSpanTokens, &g.span_tokens));
  constexpr uint32_t kInt32Max = std::numeric_limits<int32_t>::max();
  RETURN_IF_ERROR(ReadBounded(r, "first_position", 0, kInt32Max - g.span_tokens,
                              &hd.first_position));
  RETURN_IF_ERROR(ReadBounded(r, "span_index", 0, kInt32Max, &hd.span_index));
  int len;
  RETURN_IF_ERROR(ReadBounded(r, "fingerprint length", 0, kMaxLabelBytes, &len));
  if (!r.ReadString(len, &hd.model_fingerprint)) return Truncated("fingerprint");
  RETURN_IF_ERROR(ReadBounded(r, "policy length", 0, kMaxLabelBytes, &len));
  if (!r.ReadString(len, &hd.policy)) return Truncated("policy");

  // Every head record takes at least kOwnedHeadBytes: reject absurd geometry before
  // allocating for it.
  const int64_t num_heads = g.num_heads_total();
  if (num_heads * kOwnedHeadBytes > static_cast<int64_t>(r.remaining())) {
    return Truncated(absl::StrCat("head table (", num_heads, " heads)"));
  }
  span.heads.resize(num_heads);
  for (int l = 0; l < g.num_layers; ++l) {
    for (int h = 0; h < g.num_kv_heads; ++h) {
      RETURN_IF_ERROR(ParseHead(r, span, l, h, minor, &span.head(l, h)));
    }
  }
  if (r.remaining() != 0) {
    return absl::DataLossError(absl::StrCat("span: ", r.remaining(), " trailing bytes"));
  }
  RETURN_IF_ERROR(internal::CheckSpan(span, absl::StatusCode::kDataLoss));
  return span;
}

}  // namespace kvspan::kvcache
