#include "kvcache/span_kernel_views.h"

#include <algorithm>

#include "common/float16.h"
#include "common/memory_bytes.h"

namespace kvspan::kvcache {

kernels::SpanBlockView ToSpanBlockView(const EntryBlock& block) {
  kernels::SpanBlockView v;
  v.codec = static_cast<kernels::SpanCodec>(block.codec);
  v.group_size = block.group_size;
  v.num_entries = block.num_entries();
  v.head_dim = block.head_dim;
  v.key_data = block.key_data.data();
  v.value_data = block.value_data.data();
  v.key_params = block.key_params.data();
  v.value_params = block.value_params.data();
  // All-zero log counts (every plain span) skip the bias adds.
  const bool any = std::any_of(block.log_counts.begin(), block.log_counts.end(), [](float x) { return x != 0.0f; });
  v.log_counts = any ? block.log_counts.data() : nullptr;
  v.positions = block.positions.data();
  return v;
}

SpanKernelViews::SpanKernelViews(const Span& span) : num_kv_heads_(span.header.geometry.num_kv_heads) {
  const SpanGeometry& g = span.header.geometry;
  heads_.resize(g.num_heads_total());
  auto decode = [this](const std::vector<uint16_t>& halves) -> const float* {
    if (halves.empty()) return nullptr;
    std::vector<float>& f = scales_.emplace_back(halves.size());
    for (size_t i = 0; i < halves.size(); ++i) f[i] = HalfToFloat(halves[i]);
    return f.data();
  };
  for (int l = 0; l < g.num_layers; ++l) {
    for (int h = 0; h < g.num_kv_heads; ++h) {
      const std::vector<EntryBlock>& blocks = span.resolved_head(l, h).blocks;
      std::vector<kernels::SpanBlockView>& views = heads_[static_cast<size_t>(l) * num_kv_heads_ + h];
      for (size_t b = 0; b < blocks.size(); ++b) {
        const EntryBlock& block = blocks[b];
        const EntryBlock& keys = span.key_block(l, h, static_cast<int>(b));
        const EntryBlock& values = span.value_block(l, h, static_cast<int>(b));
        kernels::SpanBlockView v = ToSpanBlockView(keys);  // codec, n, log counts: the source's
        v.value_data = values.value_data.data();
        v.value_params = values.value_params.data();
        v.key_scales = decode(block.key_scales);
        v.value_scales = decode(block.value_scales);
        views.push_back(v);
      }
    }
  }
}

int64_t SpanKernelViews::memory_bytes() const {
  int64_t bytes = CapacityBytes(heads_) + CapacityBytes(scales_);
  for (const std::vector<kernels::SpanBlockView>& views : heads_) bytes += CapacityBytes(views);
  for (const std::vector<float>& scales : scales_) bytes += CapacityBytes(scales);
  return bytes;
}

}  // namespace kvspan::kvcache
