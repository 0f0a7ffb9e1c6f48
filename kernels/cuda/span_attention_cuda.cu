#include "kernels/cuda/span_attention_cuda.h"

#include <algorithm>
#include <cstring>

#include "common/status_macros.h"
#include "kernels/cuda/internal/span_decode_kernels.cuh"
#include "kernels/cuda/internal/span_decode_plan.h"

namespace kvspan::kernels {
namespace {

int64_t AlignUp(int64_t x) { return (x + 255) / 256 * 256; }

}  // namespace

CudaSpanAttention::CudaSpanAttention(int entries_per_split)
    : entries_per_split_(std::max(1, entries_per_split)) {}

absl::Status CudaSpanAttention::Run(const SpanAttentionBatch& b, void* stream) {
  RETURN_IF_ERROR(Plan(b, stream));
  return Launch(stream);
}

absl::Status CudaSpanAttention::Plan(const SpanAttentionBatch& b, void* stream_ptr) {
  using namespace internal;  // NOLINT: the kernels' own namespace
  planned_ = false;
  RETURN_IF_ERROR(ValidateSpanAttentionBatch(b));  // first: input errors show with or without a device
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  last_num_work_items_ = 0;
  batch_ = b;
  batch_.block_indptr = nullptr;  // host arrays are not kept past Plan
  batch_.blocks = nullptr;
  batch_.tail_k = batch_.tail_v = nullptr;
  batch_.tail_len = batch_.query_position = nullptr;
  if (b.num_seqs == 0) {
    planned_ = true;
    return absl::OkStatus();
  }
  const int heads = b.num_seqs * b.num_kv_heads;
  const SpanDecodePlan plan = PlanSpanDecode(b, entries_per_split_);
  const int num_items = static_cast<int>(plan.items.size());
  last_num_work_items_ = num_items;

  // One scratch allocation: [items | block views | slot indptr | m | s | o].
  const int num_blocks = b.block_indptr[heads];
  const int64_t blocks_off = AlignUp(int64_t{num_items} * sizeof(SpanDecodeWorkItem));
  const int64_t indptr_off = AlignUp(blocks_off + int64_t{num_blocks} * sizeof(SpanBlockView));
  const int64_t staged_bytes = indptr_off + int64_t(plan.slot_indptr.size()) * sizeof(int32_t);
  const int64_t rows = plan.num_rows;
  const int64_t m_off = AlignUp(staged_bytes);
  const int64_t s_off = AlignUp(m_off + rows * 4);
  const int64_t o_off = AlignUp(s_off + rows * 4);
  const int64_t total = AlignUp(o_off + rows * b.head_dim * 4);
  staging_.assign(staged_bytes, 0);
  std::memcpy(staging_.data(), plan.items.data(), num_items * sizeof(SpanDecodeWorkItem));
  if (num_blocks > 0) std::memcpy(staging_.data() + blocks_off, b.blocks, num_blocks * sizeof(SpanBlockView));
  std::memcpy(staging_.data() + indptr_off, plan.slot_indptr.data(), plan.slot_indptr.size() * sizeof(int32_t));
  RETURN_IF_ERROR(scratch_.Reserve(total));
  // NOTE: from pageable memory, so the copy waits for the stream's earlier work (which may
  // still read the scratch), and staging_ is free again when it returns.
  RETURN_IF_ERROR(scratch_.CopyFromHostAsync(staging_.data(), staged_bytes, 0, stream_ptr));
  layout_ = {num_items, plan.max_item_rows, blocks_off, indptr_off, m_off, s_off, o_off};
  planned_ = true;
  return absl::OkStatus();
}

absl::Status CudaSpanAttention::Launch(void* stream_ptr) {
  using namespace internal;  // NOLINT: the kernels' own namespace
  if (!planned_) return absl::FailedPreconditionError("CudaSpanAttention::Launch before a successful Plan");
  const SpanAttentionBatch& b = batch_;
  if (b.num_seqs == 0) return absl::OkStatus();
  const int num_items = layout_.num_items;
  char* base = scratch_.as<char>();
  SpanDecodeBuffers buffers;
  buffers.items = reinterpret_cast<const SpanDecodeWorkItem*>(base);
  buffers.blocks = reinterpret_cast<const SpanBlockView*>(base + layout_.blocks);
  buffers.slot_indptr = reinterpret_cast<const int32_t*>(base + layout_.slot_indptr);
  buffers.part_m = reinterpret_cast<float*>(base + layout_.part_m);
  buffers.part_s = reinterpret_cast<float*>(base + layout_.part_s);
  buffers.part_o = reinterpret_cast<float*>(base + layout_.part_o);
  const SpanDecodePartialArgs pa = MakeSpanDecodePartialArgs(b, layout_.max_item_rows, buffers);
  if (num_items > 0) {
    const LaunchShape shape{dim3(num_items, (layout_.max_item_rows + kSpanDecodeRows - 1) / kSpanDecodeRows),
                            dim3(kSpanDecodeThreads)};
    DispatchChannelsPerLane(b.head_dim, [&](auto cpl) {
      KVSPAN_LAUNCH(SpanDecodePartialKernel<decltype(cpl)::value>, shape, stream_ptr, pa);
    });
    RETURN_IF_ERROR(KvspanLaunchStatus("span decode partial launch"));
  }
  const SpanDecodeMergeArgs ma = MakeSpanDecodeMergeArgs(b, buffers);
  const LaunchShape merge_shape{dim3(b.num_seqs * b.num_kv_heads), dim3(kSpanDecodeThreads)};
  KVSPAN_LAUNCH(SpanDecodeMergeKernel, merge_shape, stream_ptr, ma);
  return KvspanLaunchStatus("span decode merge launch");
}

}  // namespace kvspan::kernels
