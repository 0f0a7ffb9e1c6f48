// The host half of CudaSpanAttention (span_attention_cuda.h): the batch's checks and
// its cut into work items, plain C++ shared by the CUDA build and the CPU emulation test
// (cpu_emulator.h), so both run the same plan.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_PLAN_H_
#define KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/span_attention_cuda.h"

namespace kvspan::kernels::internal {

// One piece of one (sequence, KV head)'s entries: whole blocks [block_begin, block_end)
// of the batch's views, then tail keys [tail_begin, tail_end), for the num_q queries of its
// sequence. Its partial state has num_q * group rows (r = j * group + h), at rows
// row_offset .. + num_q * group of the partial arrays.
struct SpanDecodeWorkItem {
  const float* tail_k = nullptr;  // the head's tail (already offset by the head), or null
  const float* tail_v = nullptr;
  int32_t seq = 0;
  int32_t head = 0;
  int32_t block_begin = 0;
  int32_t block_end = 0;
  int32_t tail_begin = 0;
  int32_t tail_end = 0;
  int32_t tail_len = 0;
  int32_t query_position = 0;  // of the first query
  int32_t q_row = 0;           // the sequence's first query in the batch's ragged q / out
  int32_t num_q = 1;
  int64_t row_offset = 0;
};

struct SpanDecodePlan {
  std::vector<SpanDecodeWorkItem> items;
  // [num_seqs * H + 1]: the items of (sequence, head) sh are
  // [slot_indptr[sh], slot_indptr[sh + 1]).
  std::vector<int32_t> slot_indptr;
  int64_t num_rows = 0;   // partial rows over all items
  int max_item_rows = 0;  // the most rows of one item (num_q * group)
};

// The kernels' arguments (span_decode_kernels.cuh), by value.
struct SpanDecodePartialArgs {
  const SpanDecodeWorkItem* items;  // [num items]
  int max_item_rows;                // grid.y covers it in chunks of kSpanDecodeRows
  const SpanBlockView* blocks;      // the batch's views
  const float* q;                   // [total queries, H * group, D], row stride q_row_stride
  int64_t q_row_stride;
  float* part_m;                    // [num rows]
  float* part_s;                    // [num rows]
  float* part_o;                    // [num rows, D]
  int num_kv_heads;
  int group;
  int head_dim;
  float scale;
  int window;
  int64_t tail_token_stride;
};

struct SpanDecodeMergeArgs {
  const SpanDecodeWorkItem* items;
  const int32_t* slot_indptr;  // [num_seqs * H + 1]
  const float* part_m;
  const float* part_s;
  const float* part_o;
  float* out;  // [total queries, H * group, D]
  int num_kv_heads;
  int group;
  int head_dim;
};

// Where the kernels find the plan and put the partials: device memory on a GPU, host
// memory in the emulator.
struct SpanDecodeBuffers {
  const SpanDecodeWorkItem* items = nullptr;  // SpanDecodePlan::items
  const SpanBlockView* blocks = nullptr;      // the batch's views
  const int32_t* slot_indptr = nullptr;       // SpanDecodePlan::slot_indptr
  float* part_m = nullptr;                    // [SpanDecodePlan::num_rows]
  float* part_s = nullptr;
  float* part_o = nullptr;                    // [num_rows, D]
};
// `max_item_rows`: SpanDecodePlan::max_item_rows of the plan the buffers hold.
SpanDecodePartialArgs MakeSpanDecodePartialArgs(const SpanAttentionBatch& batch, int max_item_rows,
                                                const SpanDecodeBuffers& buffers);
SpanDecodeMergeArgs MakeSpanDecodeMergeArgs(const SpanAttentionBatch& batch, const SpanDecodeBuffers& buffers);

// InvalidArgument when `batch` breaks SpanAttentionBatch's invariants (host-side checks only:
// shapes, codecs, group sizes, indptr, null pointers).
absl::Status ValidateSpanAttentionBatch(const SpanAttentionBatch& batch);

// Each (sequence, head)'s non-empty blocks in runs of whole blocks of at most
// `entries_per_split` entries (a larger block alone), then its tail in pieces of
// `entries_per_split`; one empty item for a head with neither. REQUIRES: ValidateSpanAttentionBatch(batch).ok(); entries_per_split >= 1.
SpanDecodePlan PlanSpanDecode(const SpanAttentionBatch& batch, int entries_per_split);

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_PLAN_H_
