// GpuKvCache: one sequence's KV cache in device memory for gpu::GpuModel (gpu_model.h),
// dense or compressed into kvcache's span format. This header includes no CUDA header.
#ifndef KVSPAN_GPU_GPU_KV_CACHE_H_
#define KVSPAN_GPU_GPU_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/span_attention.h"
#include "kvcache/span.h"
#include "kvcache/span_compressor.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace kvspan::gpu {

class GpuModel;

struct GpuCacheOptions {
  // Null: a dense cache. Else spans of span_tokens tokens are compressed by it (query-aware
  // compressors, query_needs().any(), are not supported on the GPU yet: Unimplemented).
  // A kvcache::PolicySpanCompressor whose policy has no main reducer and no sharing stage
  // (codec-only, or sinks and / or window; bf16, fp16, int8, int4 or int2) is run on the
  // device by kernels::EncodeSpanCuda: it gathers the span's kvcache::ProtectedTokens (the
  // same for every head) and encodes them as EncodeBlock does, bit for bit, so the spans
  // are the ones the compressor would have made; any other compressor runs on the host
  // from the span's rows read back.
  std::shared_ptr<kvcache::SpanCompressor> compressor;
  int span_tokens = 64;  // S, [1, kvcache::kMaxSpanTokens]
};

// One sequence's KV cache in device memory, all layers: dense fp32 rows
// k and v [num_layers][num_kv_heads][dense capacity][head_dim] for the positions from
// num_compressed_tokens() on (row t is position num_compressed_tokens() + t), and, for a
// compressed cache, the spans covering [0, num_compressed_tokens()) as entry blocks in
// device memory. A dense cache's rows hold its whole capacity; a compressed cache's start
// at 2 spans, grow (doubling, up to the capacity) when a step needs more, and drop the
// rows of each span it compresses (the tail moves to row 0), so its memory is its spans
// plus its recent tokens. Made by GpuModel::NewCache. Not thread-safe.
class GpuKvCache {
 public:
  int num_tokens() const { return num_tokens_; }
  int capacity() const { return capacity_; }
  int num_compressed_tokens() const { return static_cast<int>(spans_.size()) * span_tokens_; }
  // The compressed spans (host copies, as the cache store and the transport take them).
  const std::vector<kvcache::Span>& spans() const { return spans_; }
  // True when its spans are encoded on the device: a PolicySpanCompressor whose policy is
  // codec-only or sinks / window only (GpuCacheOptions::compressor); false for a dense cache.
  bool encodes_on_device() const { return device_codec_ != nullptr; }
  // Drops the tail's tokens from `num_tokens` on (keeps their slots); compressed tokens stay.
  // REQUIRES: num_compressed_tokens() <= num_tokens <= this->num_tokens().
  void Truncate(int num_tokens) { num_tokens_ = num_tokens; }
  // Device bytes held: the dense rows and every span's blocks.
  int64_t memory_bytes() const;
  // Tokens the dense rows can hold now.
  int dense_capacity() const { return dense_capacity_; }

  // Makes `prefix` (spans 0 .. k-1 of this cache's geometry and S, e.g. loaded from the
  // cache store) the committed tokens of an empty compressed cache, uploading their blocks.
  // InvalidArgument as kvcache::CheckPrefixSpans, for a dense cache given spans or for a
  // cache that is not empty; ResourceExhausted when device memory runs out. On error
  // nothing changes.
  absl::Status AdoptPrefix(std::vector<kvcache::Span> prefix);
  // model::KvCache's ExportDenseRows / ImportDenseRows over the device rows (no queries:
  // query-aware compressors do not run here): the committed tokens after the spans, and
  // rows appended at num_tokens() (a compressed cache takes them only into an empty tail
  // and fewer than a span, as CompressedKvCache). InvalidArgument for rows of another
  // geometry or position; ResourceExhausted past the capacity. On error nothing visible
  // changes.
  absl::StatusOr<model::DenseRows> ExportDenseRows() const;
  absl::Status ImportDenseRows(const model::DenseRows& rows);

 private:
  friend class GpuModel;  // its Forward appends, attends and commits
  // One compressed span's blocks in one device allocation, and their device views.
  struct DeviceSpan {
    kernels::DeviceBuffer arena;
    std::vector<std::vector<kernels::SpanBlockView>> heads;  // [layer * H + kv_head]
  };
  GpuKvCache() = default;
  // An empty cache for `config`'s geometry (GpuModel::NewCache's contract).
  static absl::StatusOr<std::unique_ptr<GpuKvCache>> Create(const model::ModelConfig& config, int capacity_tokens,
                                                           const GpuCacheOptions& options);
  // Compresses the span at `first_position` from its dense rows with compressor_ (on the
  // host) and uploads it; EncodeSpanOnDevice does the same on the device for a policy
  // without main reducer or sharing (the host copy read back; nothing kept: empty blocks).
  absl::StatusOr<DeviceSpan> CompressSpan(int first_position, kvcache::Span* span) const;
  absl::StatusOr<DeviceSpan> EncodeSpanOnDevice(int first_position, kvcache::Span* span) const;
  // Uploads a span's arrays (a shared block's source arrays once) into one allocation with
  // its blocks' device views.
  absl::StatusOr<DeviceSpan> UploadSpan(const kvcache::Span& span) const;
  // Grows the dense rows to hold `tokens` tokens, keeping the rows in use (nothing changes
  // on failure). DropDenseRows moves the rows after the first `drop` of `used` to row 0
  // (after spans are compressed; Internal if a device copy fails half-way).
  absl::Status EnsureDense(int tokens);
  absl::Status DropDenseRows(int drop, int used);

  int num_tokens_ = 0;
  int capacity_ = 0;
  int num_layers_ = 0;
  int num_kv_heads_ = 0;
  int num_heads_ = 0;
  int head_dim_ = 0;
  int dense_capacity_ = 0;    // tokens per (layer, head) in k_ / v_
  int64_t layer_floats_ = 0;  // num_kv_heads * dense_capacity_ * head_dim
  kernels::DeviceBuffer k_, v_;
  std::shared_ptr<kvcache::SpanCompressor> compressor_;
  // Set when compressor_ is a PolicySpanCompressor with a codec-only or sinks / window
  // policy: encoded on the device.
  const kvcache::PolicySpanCompressor* device_codec_ = nullptr;
  int span_tokens_ = 0;
  std::vector<kvcache::Span> spans_;
  std::vector<DeviceSpan> device_spans_;
};

}  // namespace kvspan::gpu

#endif  // KVSPAN_GPU_GPU_KV_CACHE_H_
