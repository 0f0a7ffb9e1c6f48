// SpanKernelViews: the kernels::SpanBlockView of every block of one span, built once per
// span so that attention reads owned and shared (cross-layer) blocks through one kernel.
#ifndef KVSPAN_KVCACHE_SPAN_KERNEL_VIEWS_H_
#define KVSPAN_KVCACHE_SPAN_KERNEL_VIEWS_H_

#include <cstdint>
#include <vector>

#include "kernels/span_attention.h"
#include "kvcache/entry_block.h"
#include "kvcache/span.h"

namespace kvspan::kvcache {

// A borrowed kernels view of `block` (valid while `block` lives and is unchanged).
// REQUIRES: `block` owns its keys and values (not a shared block; see SpanKernelViews).
kernels::SpanBlockView ToSpanBlockView(const EntryBlock& block);

// The kernel views of every block of every head of one span, built once per span:
// a shared block's view takes its key (and, for kKeysAndValues, value) codes and params
// from block b of its source layer, and its fp16 scales decoded to float here, once, not
// per query. Owned and shared blocks then go through the same kernels::SpanAttention.
// Borrows the span's block arrays: valid while the Span lives unchanged (moving the Span
// keeps them: vectors move their buffers). Move-only (the views point into scales_).
// Thread-compatible.
class SpanKernelViews {
 public:
  // REQUIRES: ValidateSpan(span).ok().
  explicit SpanKernelViews(const Span& span);
  SpanKernelViews(SpanKernelViews&&) = default;
  SpanKernelViews& operator=(SpanKernelViews&&) = default;
  SpanKernelViews(const SpanKernelViews&) = delete;
  SpanKernelViews& operator=(const SpanKernelViews&) = delete;

  // Heap bytes of the views and the decoded scales (capacities); the span's own arrays,
  // which the views borrow, are not included.
  int64_t memory_bytes() const;

  // The views of resolved_head(layer, kv_head)'s blocks, in block order.
  const std::vector<kernels::SpanBlockView>& head(int layer, int kv_head) const {
    return heads_[static_cast<size_t>(layer) * num_kv_heads_ + kv_head];
  }

 private:
  int num_kv_heads_ = 0;
  std::vector<std::vector<kernels::SpanBlockView>> heads_;  // [layers * kv_heads]
  std::vector<std::vector<float>> scales_;  // decoded scale arrays the views point into
};

}  // namespace kvspan::kvcache

#endif  // KVSPAN_KVCACHE_SPAN_KERNEL_VIEWS_H_
