// Attention over compressed KV spans on the GPU, batched over sequences, for decode steps
// (one query per sequence) and prefill chunks (num_q queries per sequence): the queries
// attend to the compressed entry blocks of the sequence's spans, read in their stored
// layout (kvcache/entry_block.h, kernels/span_attention.h's SpanBlockView: bf16, fp16, int8,
// int4 and int2 codes, dequantization fused into the dot products), and causally to the
// dense fp32 tail of its recent tokens, whose last num_q tokens are the queries' own. This is
// the GPU form of what CompressedKvCache computes per sequence on the CPU, and that is its
// contract:
//
//   for sequence s (n = num_q[s] queries) and KV head g, with H = num_kv_heads and rows
//   r = j * group + h:
//     InitPartial;
//     for each block b in blocks[block_indptr[s*H + g] .. block_indptr[s*H + g + 1]):
//       SpanAttentionRef({b, q of (s, g), num_q = n, group, scale, window,
//                         first_query_position = query_position[s], SpanKeyDot::kFloat});
//     if tail_len[s] > 0:
//       DenseAttentionPartialRef({tail of (s, g), num_keys = tail_len[s],
//                                 q_start = tail_len[s] - n, num_q = n, window});
//     FinishPartial into out.
//
// Everything SpanBlockView carries is honoured: ragged entry counts per sequence and head
// (through the index pointers, the way flashinfer's batch decode takes indptr arrays),
// log-count biases, per-entry key/value scales of shared blocks (MiniCache) with keys and
// values from different stored blocks (PoD), explicit entry positions under a sliding
// window. Keys are dotted in fp32 (SpanKeyDot::kFloat's function).
//
// A prefill chunk's rows re-read the item's entries once per 8 rows: correct, and right
// for short chunks and decode; long prefill chunks want tensor-core tiles (not yet here).
//
// How it runs: the host cuts each (sequence, head)'s entries into work items of about
// `entries_per_split` entries (whole blocks; the tail in pieces of that size), so a long
// context is split along its length and a batch of short ones still fills the GPU. One
// CUDA block per work item and 8 of its num_q * group query rows computes a partial
// softmax state (m, s, o) in fp32, each warp over a strided subset of the entries, merged across warps by
// log-sum-exp; a second kernel merges the work items of each (sequence, head) and
// finishes o / s. The CPU's MergePartial/FinishPartial formulas, on the device.
//
// This header never includes CUDA headers (STYLE.md).
#ifndef KVSPAN_KERNELS_CUDA_SPAN_ATTENTION_CUDA_H_
#define KVSPAN_KERNELS_CUDA_SPAN_ATTENTION_CUDA_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/span_attention.h"

namespace kvspan::kernels {

// The largest head_dim the kernels take.
inline constexpr int kCudaSpanMaxHeadDim = 256;

// One decode step's attention inputs for a batch. "Device" pointers are device memory of
// the current device; "host" arrays are read during Run and may be reused once it returns.
struct SpanAttentionBatch {
  int num_seqs = 0;      // >= 0
  int num_kv_heads = 0;  // H >= 1
  int group = 0;         // query heads per KV head, >= 1
  int head_dim = 0;      // D in [1, kCudaSpanMaxHeadDim]
  float scale = 1.0f;    // usually 1 / sqrt(D)
  int window = 0;        // the model's sliding window; 0 = none
  // Host [num_seqs]: queries per sequence, each >= 1; null = 1 each (a decode step).
  const int32_t* num_q = nullptr;
  // Device [total queries, H * group, D] fp32, the sequences' queries one after another:
  // query j of sequence s, head h = g * group + r, at q[((Q_s + j) * H * group + h) * D]
  // with Q_s = num_q[0] + ... + num_q[s - 1]. `out` has the same layout and may not alias q.
  // q_row_stride: floats between consecutive queries of q (0 = H * group * D, packed), so
  // q can be read in place from a fused qkv matrix; `out` is always packed.
  const float* q = nullptr;
  int64_t q_row_stride = 0;
  float* out = nullptr;
  // Host [num_seqs * H + 1]: block_indptr[0] = 0, non-decreasing.
  const int32_t* block_indptr = nullptr;
  // Host [block_indptr[num_seqs * H]]: the views of the blocks, every data, params, scales,
  // log-count and position pointer in them device memory. head_dim = D; quantized codecs
  // group_size >= 1; positions non-null under a window.
  const SpanBlockView* blocks = nullptr;
  // Host [num_seqs]: device pointers of each sequence's dense tail, keys and values fp32:
  // key t of head g at tail_k[s][g * tail_head_stride + t * tail_token_stride] (D floats).
  // The tail's last num_q[s] keys are the queries' own positions: tail_len[s] >= num_q[s]
  // (or 0: the sequence then attends to its blocks only).
  const float* const* tail_k = nullptr;
  const float* const* tail_v = nullptr;
  const int32_t* tail_len = nullptr;  // host [num_seqs], >= 0
  int64_t tail_head_stride = 0;       // floats
  // Host [num_seqs]: each sequence's own head stride (caches of different capacities);
  // null = tail_head_stride for every sequence.
  const int64_t* tail_head_strides = nullptr;
  int64_t tail_token_stride = 0;      // floats, >= D
  // Host [num_seqs]: the position of each sequence's first query (query j at + j); read
  // only under a window.
  const int32_t* query_position = nullptr;
};

// Runs SpanAttentionBatch on the GPU. Owns its device scratch (work items, block views and
// partial states), grown as batches need and kept for the next call. Not thread-safe: one
// caller, one stream at a time.
class CudaSpanAttention {
 public:
  // `entries_per_split`: the most entries (of whole blocks, or of the tail) in one work
  // item; smaller splits a context over more CUDA blocks. REQUIRES: >= 1.
  explicit CudaSpanAttention(int entries_per_split = 512);

  // Enqueues the step on `stream` (a cudaStream_t; null is the default stream) and returns
  // without waiting for the kernels; the block views and work items are copied to the
  // device before it returns. InvalidArgument for a batch that breaks the invariants above
  // (checked on the host: shapes, codecs, indptr, null pointers); Unavailable without a
  // device; ResourceExhausted / Internal for CUDA errors.
  absl::Status Run(const SpanAttentionBatch& batch, void* stream);

  // Run in two halves: Plan checks the batch, cuts it into work items and copies them and
  // the block views to the device (errors as Run); Launch enqueues the kernels of the last
  // Plan (FailedPrecondition before any). A plan stays valid while the batch's device
  // memory does, so Launch may repeat it (benchmarks time the kernels alone this way).
  absl::Status Plan(const SpanAttentionBatch& batch, void* stream);
  absl::Status Launch(void* stream);

  // Work items of the last Run (tests and benchmarks: the split actually made).
  int last_num_work_items() const { return last_num_work_items_; }

 private:
  int entries_per_split_;
  int last_num_work_items_ = 0;
  bool planned_ = false;
  SpanAttentionBatch batch_;     // the planned batch's shape and device pointers (host arrays not kept)
  // The last plan's shape and where its parts sit in scratch_ (byte offsets; the work items
  // at 0).
  struct PlannedLayout {
    int num_items = 0;
    int max_item_rows = 0;
    int64_t blocks = 0, slot_indptr = 0, part_m = 0, part_s = 0, part_o = 0;
  };
  PlannedLayout layout_;
  std::vector<uint8_t> staging_;  // host image of the device scratch's head
  DeviceBuffer scratch_;          // work items, block views, slot indptr, then partials
};

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_CUDA_SPAN_ATTENTION_CUDA_H_
