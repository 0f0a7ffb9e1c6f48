// Span: the compressed KV of S consecutive tokens of one sequence, all layers and KV
// heads, as produced by a compression policy and read by attention over compressed spans.
//
// Layout in memory: heads[layer * num_kv_heads + kv_head] is that head's HeadEntries, a
// ragged list of entries split into one or more EntryBlocks (entry_block.h):
//   - plain spans (one codec): one block per head, every token kept;
//   - mixed precision (MiKV): two blocks, important entries in the high codec first, the
//     rest in the low codec; no entry dropped;
//   - eviction / merging reducers: fewer entries (log counts keep merged softmax mass);
//   - cross-layer sharing, whole head (reserved head record, produced by nothing): a head
//     with shared_from_layer = L has no blocks of its own and reads head (L, kv_head)'s
//     blocks; L < layer, and that head is neither shared nor holds shared blocks;
//   - cross-layer sharing, per block (MiniCache / PoD, kvcache/sharing.h): block b of head
//     (layer, h) may be a shared block (entry_block.h) reading block b of head
//     (source_layer, h): source_layer < layer, that head is an owned head record with more
//     than b blocks, its block b is not shared, and the shared block's codec, group_size,
//     positions and log counts equal the source block's (no chains).
// Invariants (ValidateSpan; docs/span-format.md "Validation"): every position lies in
// [first_position, first_position + S); blocks' positions are non-decreasing; per head,
// total entries <= S and sum(exp(log_count)) <= S * (1 + 1e-4) (an entry stands for the
// tokens it merged, each token at most once).
//
// Causality: a span is built from its own S tokens only (FromDense reads tokens
// [0, S) of the view it is given), so a stored span stays valid for every continuation.
//
// Span is a value type: thread-compatible (const access from many threads is safe).
#ifndef KVSPAN_KVCACHE_SPAN_H_
#define KVSPAN_KVCACHE_SPAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvcache/entry_block.h"
#include "kvcache/span_geometry.h"

namespace kvspan::kvcache {

// Most blocks one head may hold (MiKV uses two; room for a third precision tier).
inline constexpr int kMaxBlocksPerHead = 4;
// Longest model fingerprint / policy string.
inline constexpr int kMaxLabelBytes = 4096;

struct HeadEntries {
  int shared_from_layer = kNotShared;  // kNotShared, or the layer whose entries this reads
  std::vector<EntryBlock> blocks;      // empty when shared

  int num_entries() const;
  friend bool operator==(const HeadEntries&, const HeadEntries&) = default;
};

struct SpanHeader {
  std::string model_fingerprint;  // identifies the model weights (<= kMaxLabelBytes)
  std::string policy;             // the compression policy string (<= kMaxLabelBytes)
  SpanGeometry geometry;
  int32_t first_position = 0;     // sequence index of the span's first token, >= 0
  int32_t span_index = 0;         // i: first_position is usually i * S; >= 0
  friend bool operator==(const SpanHeader&, const SpanHeader&) = default;
};

// A borrowed dense fp32 K/V slice: element (layer l, kv head h, token t, channel d) at
// keys[l * layer_stride + h * head_stride + t * token_stride + d] (values alike). Only
// tokens [0, span_tokens) are read.
struct DenseKvView {
  const float* keys = nullptr;
  const float* values = nullptr;
  int64_t layer_stride = 0;  // floats
  int64_t head_stride = 0;   // floats
  int64_t token_stride = 0;  // floats, >= head_dim
};

struct Span {
  SpanHeader header;
  std::vector<HeadEntries> heads;  // [num_layers * num_kv_heads], layer-major

  const HeadEntries& head(int layer, int kv_head) const {
    return heads[static_cast<size_t>(layer) * header.geometry.num_kv_heads + kv_head];
  }
  HeadEntries& head(int layer, int kv_head) {
    return heads[static_cast<size_t>(layer) * header.geometry.num_kv_heads + kv_head];
  }
  // The head whose blocks (layer, kv_head) reads: itself, or the one it shares.
  // REQUIRES: ValidateSpan(*this).ok().
  const HeadEntries& resolved_head(int layer, int kv_head) const;
  // The block whose key (value) codes block b of resolved_head(layer, kv_head) reads: that
  // block itself when it owns them, else block b of its source layer.
  // REQUIRES: ValidateSpan(*this).ok(), b < resolved_head(layer, kv_head).blocks.size().
  const EntryBlock& key_block(int layer, int kv_head, int b) const;
  const EntryBlock& value_block(int layer, int kv_head, int b) const;

  // The first policy: every token kept, one block per head in `codec`, log counts 0,
  // positions first_position + t. `header.geometry` gives the shape of `kv`.
  // InvalidArgument for a bad header, null pointers, bad strides, or values the codec
  // rejects (EncodeBlock).
  static absl::StatusOr<Span> FromDense(const SpanHeader& header, const CodecSpec& codec,
                                        const DenseKvView& kv);

  friend bool operator==(const Span&, const Span&) = default;
};

// OK when `span` satisfies every invariant above and every block passes ValidateBlock
// with the geometry's head_dim; InvalidArgument naming the first violation.
absl::Status ValidateSpan(const Span& span);

// What a reader expects of span number `index` of a sequence: OK when its header names
// `model_fingerprint` and `policy`, has `geometry`, span_index == index and first_position
// == index * geometry.span_tokens; InvalidArgument naming the first mismatch. The cache
// store's reader and the span transport's receiver check every span ParseSpan gave them
// with it before use (ParseSpan has validated the span itself; a span from elsewhere
// needs ValidateSpan too).
absl::Status CheckSpanIdentity(const Span& span, absl::string_view model_fingerprint, absl::string_view policy,
                               const SpanGeometry& geometry, int64_t index);

// Heap bytes the span holds, measured from its buffers' capacities: the heads array, each
// head's blocks array, every block (BlockMemoryBytes) and the header strings' heap. The
// Span object itself (sizeof(Span)) is its container's. Pure.
int64_t SpanMemoryBytes(const Span& span);

// Dequantized keys / values [n, head_dim] of block b of resolved_head(layer, kv_head),
// shared blocks resolved and their per-entry scales applied (in fp32, after decoding): the
// meaning of the block. REQUIRES: as Span::key_block.
std::vector<float> DecodeSpanBlockKeys(const Span& span, int layer, int kv_head, int b);
std::vector<float> DecodeSpanBlockValues(const Span& span, int layer, int kv_head, int b);

// Mixed precision (MiKV) for one head: entries with important[i] != 0 go, in order, to a
// block in `high`; the others to a block in `low`. Both blocks are always present (either
// may be empty), high first. InvalidArgument when `important` has the wrong size or
// EncodeBlock rejects an input.
struct MixedPrecisionSpec {
  CodecSpec high{Codec::kInt8, 32};
  CodecSpec low{Codec::kInt2, 32};
};
absl::StatusOr<HeadEntries> EncodeMixedHead(const MixedPrecisionSpec& spec,
                                            const DenseEntries& entries,
                                            absl::Span<const uint8_t> important);

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SPAN_H_
