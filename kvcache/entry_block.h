// EntryBlock: a run of KV entries of one (layer, KV head) stored in one codec, and the
// codecs themselves (bf16, fp16, and KIVI-style asymmetric int8/int4/int2).
//
// An entry is one kept (or merged) token: its original position (keys carry RoPE for that
// position), a log-count weight (an entry standing for n merged tokens adds log n to its
// attention logit) and head_dim key and value channels.
//
// Quantized layout (KIVI, arXiv 2402.02750), with B = CodecBits(codec), G = group_size,
// n entries, D = head_dim:
//   key_data   [n, CodeRowBytes]   codes of entry e, channel d at bit (d*B) % 8 of byte
//                                  (d*B) / 8 of row e, least significant bits first
//   key_params [ceil(n/G), D, 2]   fp16 (scale, zero): keys are grouped PER CHANNEL, entries
//                                  [g*G, min((g+1)*G, n)) of channel d share group (g, d)
//   value_data [n, CodeRowBytes]   as keys
//   value_params [n, ceil(D/G), 2] fp16 (scale, zero): values are grouped PER TOKEN,
//                                  channels [g*G, min((g+1)*G, D)) of entry e share (e, g)
// A code q in [0, 2^B) decodes to  x = zero + q * scale  in fp32 (the product is exact in
// fp32, the sum is rounded once). Unused high bits of a row's last byte are zero.
// bf16/fp16: key_data/value_data are [n, D] 16-bit values, little-endian; params empty.
//
// Shared blocks (cross-layer sharing: MiniCache arXiv 2405.14366, PoD arXiv 2412.02252;
// kvcache/sharing.h): a block with source_layer != kNotShared reads block b (its own
// index) of head (source_layer, same kv head), an owned block. It holds the source's codec,
// group_size, positions and log counts (copies in memory; not serialized) and:
//   shares = kKeys:          no key codes/params (the source's keys), own value codes and
//                            params in the source's codec; optional key_scales.
//   shares = kKeysAndValues: no codes or params at all; optional key_scales and
//                            value_scales.
// key_scales / value_scales: [n] fp16 per-entry magnitude factors, or empty (all 1): the
// entry's key is key_scale[e] * (source key e), its value value_scale[e] * (value e).
// The cross-block rules (source exists, same index, same entries) are span invariants
// (ValidateSpan); ValidateBlock checks only what one block can show.
//
// All functions are pure and thread-safe; EntryBlock is a value type (thread-compatible).
#ifndef KVSPAN_KVCACHE_ENTRY_BLOCK_H_
#define KVSPAN_KVCACHE_ENTRY_BLOCK_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvspan::kvcache {

// Codec ids are part of the serialized format: never renumber.
enum class Codec : uint8_t {
  kBF16 = 1,  // raw bfloat16, round-to-nearest-even from fp32
  kFP16 = 2,  // raw IEEE fp16, round-to-nearest-even from fp32
  kInt8 = 3,  // asymmetric group-wise, 256 levels
  kInt4 = 4,  // asymmetric group-wise, 16 levels, two codes per byte
  kInt2 = 5,  // asymmetric group-wise, 4 levels, four codes per byte
};

// Largest accepted group size (quantized codecs).
inline constexpr int kMaxGroupSize = 65536;

bool IsKnownCodec(uint8_t id);
bool IsQuantized(Codec codec);
const char* CodecName(Codec codec);  // "bf16", "fp16", "int8", "int4", "int2"
// The inverse of CodecName. InvalidArgument for any other name.
absl::StatusOr<Codec> CodecByName(absl::string_view name);
// Bits per stored element: 16, 16, 8, 4, 2.
int CodecBits(Codec codec);
// Bytes of one entry's key (or value) row: ceil(head_dim * CodecBits / 8).
int64_t CodeRowBytes(Codec codec, int head_dim);
// Number of fp16 values in key_params / value_params (0 for bf16/fp16).
// REQUIRES: group_size >= 1 for quantized codecs.
int64_t KeyParamCount(Codec codec, int group_size, int num_entries, int head_dim);
int64_t ValueParamCount(Codec codec, int group_size, int num_entries, int head_dim);
// Bytes of K and V payload (data + params), excluding positions and log counts.
int64_t PayloadBytes(Codec codec, int group_size, int num_entries, int head_dim);

// An owned block (not shared).
inline constexpr int kNotShared = -1;

// What a shared block takes from its source block (serialized as flag bits: never renumber).
enum class BlockShares : uint8_t {
  kNone = 0,           // owned block
  kKeys = 1,           // PoD: keys from the source, own values
  kKeysAndValues = 2,  // MiniCache: keys and values from the source, with per-entry scales
};

struct EntryBlock {
  Codec codec = Codec::kBF16;
  int group_size = 0;  // quantized: [1, kMaxGroupSize]; bf16/fp16: 0
  int head_dim = 0;    // D; not serialized per block (the span geometry carries it)
  std::vector<int32_t> positions;      // [n], non-decreasing
  std::vector<float> log_counts;       // [n], finite, >= +0.0 (sign bit clear)
  std::vector<uint8_t> key_data;       // see the layout above
  std::vector<uint8_t> value_data;
  std::vector<uint16_t> key_params;    // fp16 (scale, zero) pairs
  std::vector<uint16_t> value_params;
  // Cross-layer sharing (see "Shared blocks" above).
  int source_layer = kNotShared;            // kNotShared, or a layer below this block's
  BlockShares shares = BlockShares::kNone;  // kNone exactly when source_layer == kNotShared
  std::vector<uint16_t> key_scales;         // fp16 [n] or empty (all 1); shared blocks only
  std::vector<uint16_t> value_scales;       // fp16 [n] or empty; kKeysAndValues only

  bool is_shared() const { return source_layer != kNotShared; }
  bool owns_keys() const { return shares == BlockShares::kNone; }
  bool owns_values() const { return shares != BlockShares::kKeysAndValues; }
  int num_entries() const { return static_cast<int>(positions.size()); }
  friend bool operator==(const EntryBlock&, const EntryBlock&) = default;
};

// How to encode a block.
struct CodecSpec {
  Codec codec = Codec::kBF16;
  // Quantized codecs: entries per key group and channels per value group,
  // [1, kMaxGroupSize]; a partial last group is allowed. Ignored (stored as 0) for bf16/fp16.
  int group_size = 32;
};

// Dense fp32 entries to encode; borrowed for the duration of the call.
struct DenseEntries {
  int head_dim = 0;                       // [1, kMaxHeadDim]
  absl::Span<const int32_t> positions;    // [n], non-decreasing
  absl::Span<const float> log_counts;     // [n], finite, >= +0.0 (sign bit clear)
  absl::Span<const float> keys;           // [n, head_dim] row-major
  absl::Span<const float> values;         // [n, head_dim] row-major
};

// Encodes `entries` with `spec`. InvalidArgument for a bad codec or group size, a size
// mismatch, unsorted positions, a negative or non-finite log count, a non-finite key or
// value, or (fp16 and quantized codecs, whose scales are fp16) |x| > kFp16Max.
// Error bound of the quantized codecs: |x - decoded| <= scale / 2 of x's group, plus one
// fp32 rounding of the decoded value. bf16/fp16 round each value to nearest even.
absl::StatusOr<EntryBlock> EncodeBlock(const CodecSpec& spec, const DenseEntries& entries);

// OK when `block` is internally consistent (sizes, sorted positions, finite weights,
// finite 16-bit values and params, non-negative scales, zero padding bits; for a shared
// block: no own key codes, own value codes exactly when shares == kKeys, scales empty or
// [n] finite fp16 >= +0, value_scales only with kKeysAndValues); InvalidArgument otherwise.
absl::Status ValidateBlock(const EntryBlock& block);

// Heap bytes the block holds: the capacities of its positions, log counts, codes, params
// and scales arrays (measured, not computed from n and the codec; copies in a shared
// block count too). Pure.
int64_t BlockMemoryBytes(const EntryBlock& block);

// Dequantized keys / values, [n, head_dim] fp32. Plain loops: the reference that fused
// attention kernels are tested against. REQUIRES: ValidateBlock(block).ok() and the block
// owns what is decoded (owns_keys() / owns_values()); for a shared block decode the source
// block and apply the scales (DecodeSpanBlockKeys / Values in span.h do both).
std::vector<float> DecodeBlockKeys(const EntryBlock& block);
std::vector<float> DecodeBlockValues(const EntryBlock& block);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_ENTRY_BLOCK_H_
