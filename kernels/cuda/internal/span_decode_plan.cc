#include "kernels/cuda/internal/span_decode_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvspan::kernels::internal {
namespace {

bool KnownCodec(SpanCodec codec) {
  switch (codec) {
    case SpanCodec::kBF16:
    case SpanCodec::kFP16:
    case SpanCodec::kInt8:
    case SpanCodec::kInt4:
    case SpanCodec::kInt2: return true;
  }
  return false;
}

bool Quantized(SpanCodec codec) {
  return codec == SpanCodec::kInt8 || codec == SpanCodec::kInt4 || codec == SpanCodec::kInt2;
}

}  // namespace

absl::Status ValidateSpanAttentionBatch(const SpanAttentionBatch& b) {
  if (b.num_seqs < 0 || b.num_kv_heads < 1 || b.group < 1 || b.head_dim < 1 ||
      b.head_dim > kCudaSpanMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("SpanAttentionBatch: shape out of range (seqs ", b.num_seqs,
                                                   ", kv heads ", b.num_kv_heads, ", group ", b.group,
                                                   ", head_dim ", b.head_dim, ")"));
  }
  if (b.num_seqs == 0) return absl::OkStatus();
  if (b.q_row_stride != 0 && b.q_row_stride < int64_t{b.num_kv_heads} * b.group * b.head_dim) {
    return absl::InvalidArgumentError("SpanAttentionBatch: q_row_stride shorter than a query's heads");
  }
  if (b.q == nullptr || b.out == nullptr || b.block_indptr == nullptr || b.tail_len == nullptr ||
      (b.window > 0 && b.query_position == nullptr)) {
    return absl::InvalidArgumentError("SpanAttentionBatch: null q, out, block_indptr, tail_len or query_position");
  }
  const int heads = b.num_seqs * b.num_kv_heads;
  if (b.block_indptr[0] != 0) return absl::InvalidArgumentError("SpanAttentionBatch: block_indptr[0] != 0");
  for (int i = 0; i < heads; ++i) {
    if (b.block_indptr[i + 1] < b.block_indptr[i]) {
      return absl::InvalidArgumentError(absl::StrCat("SpanAttentionBatch: block_indptr decreases at ", i));
    }
  }
  if (b.block_indptr[heads] > 0 && b.blocks == nullptr) {
    return absl::InvalidArgumentError("SpanAttentionBatch: null blocks");
  }
  for (int i = 0; i < b.block_indptr[heads]; ++i) {
    const SpanBlockView& v = b.blocks[i];
    if (!KnownCodec(v.codec) || v.head_dim != b.head_dim || v.num_entries < 0 ||
        (Quantized(v.codec) && v.group_size < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SpanAttentionBatch: block ", i, " has a bad codec, head_dim, entry count or group size"));
    }
    if (v.num_entries > 0 &&
        (v.key_data == nullptr || v.value_data == nullptr ||
         (Quantized(v.codec) && (v.key_params == nullptr || v.value_params == nullptr)) ||
         (b.window > 0 && v.positions == nullptr))) {
      return absl::InvalidArgumentError(absl::StrCat("SpanAttentionBatch: block ", i, " lacks data, params or positions"));
    }
  }
  for (int s = 0; s < b.num_seqs; ++s) {
    const int n = b.num_q == nullptr ? 1 : b.num_q[s];
    if (n < 1) return absl::InvalidArgumentError(absl::StrCat("SpanAttentionBatch: num_q[", s, "] < 1"));
    if (b.tail_len[s] != 0 && b.tail_len[s] < n) {
      return absl::InvalidArgumentError(
          absl::StrCat("SpanAttentionBatch: sequence ", s, "'s tail is shorter than its ", n, " queries"));
    }
    if (b.tail_len[s] < 0) return absl::InvalidArgumentError(absl::StrCat("SpanAttentionBatch: tail_len[", s, "] < 0"));
    if (b.tail_len[s] > 0 && (b.tail_k == nullptr || b.tail_v == nullptr || b.tail_k[s] == nullptr ||
                              b.tail_v[s] == nullptr || b.tail_token_stride < b.head_dim)) {
      return absl::InvalidArgumentError(absl::StrCat("SpanAttentionBatch: sequence ", s, "'s tail is missing"));
    }
  }
  return absl::OkStatus();
}

SpanDecodePlan PlanSpanDecode(const SpanAttentionBatch& b, int entries_per_split) {
  SpanDecodePlan plan;
  const int heads = b.num_seqs * b.num_kv_heads;
  plan.slot_indptr.assign(heads + 1, 0);
  int32_t q_row = 0;
  for (int sh = 0; sh < heads; ++sh) {
    const int s = sh / b.num_kv_heads;
    const int g = sh % b.num_kv_heads;
    SpanDecodeWorkItem base;
    base.seq = s;
    base.head = g;
    base.num_q = b.num_q == nullptr ? 1 : b.num_q[s];
    base.q_row = q_row;
    if (g == b.num_kv_heads - 1) q_row += base.num_q;
    const int item_rows = base.num_q * b.group;
    plan.max_item_rows = std::max(plan.max_item_rows, item_rows);
    auto push = [&](SpanDecodeWorkItem item) {
      item.row_offset = plan.num_rows;
      plan.num_rows += item_rows;
      plan.items.push_back(item);
    };
    base.tail_len = b.tail_len[s];
    base.query_position = b.query_position == nullptr ? 0 : b.query_position[s];
    if (base.tail_len > 0) {
      const int64_t head_stride = b.tail_head_strides != nullptr ? b.tail_head_strides[s] : b.tail_head_stride;
      base.tail_k = b.tail_k[s] + g * head_stride;
      base.tail_v = b.tail_v[s] + g * head_stride;
    }
    const int end = b.block_indptr[sh + 1];
    int bi = b.block_indptr[sh];
    while (bi < end) {
      if (b.blocks[bi].num_entries == 0) {
        ++bi;
        continue;
      }
      SpanDecodeWorkItem item = base;
      item.block_begin = bi;
      int64_t entries = 0;
      while (bi < end && (entries == 0 || entries + b.blocks[bi].num_entries <= entries_per_split)) {
        entries += b.blocks[bi].num_entries;
        ++bi;
      }
      item.block_end = bi;
      push(item);
    }
    for (int t0 = 0; t0 < base.tail_len; t0 += entries_per_split) {
      SpanDecodeWorkItem item = base;
      item.tail_begin = t0;
      item.tail_end = std::min(base.tail_len, t0 + entries_per_split);
      push(item);
    }
    // A head with nothing to attend still gets an (empty) item, so the merge finds its
    // sequence's query rows there and writes its zeros.
    if (static_cast<int>(plan.items.size()) == plan.slot_indptr[sh]) push(base);
    plan.slot_indptr[sh + 1] = static_cast<int32_t>(plan.items.size());
  }
  return plan;
}

SpanDecodePartialArgs MakeSpanDecodePartialArgs(const SpanAttentionBatch& b, int max_item_rows,
                                                const SpanDecodeBuffers& buffers) {
  SpanDecodePartialArgs a;
  a.items = buffers.items;
  a.max_item_rows = max_item_rows;
  a.blocks = buffers.blocks;
  a.q = b.q;
  a.q_row_stride = b.q_row_stride != 0 ? b.q_row_stride : int64_t{b.num_kv_heads} * b.group * b.head_dim;
  a.part_m = buffers.part_m;
  a.part_s = buffers.part_s;
  a.part_o = buffers.part_o;
  a.num_kv_heads = b.num_kv_heads;
  a.group = b.group;
  a.head_dim = b.head_dim;
  a.scale = b.scale;
  a.window = b.window;
  a.tail_token_stride = b.tail_token_stride;
  return a;
}

SpanDecodeMergeArgs MakeSpanDecodeMergeArgs(const SpanAttentionBatch& b, const SpanDecodeBuffers& buffers) {
  SpanDecodeMergeArgs a;
  a.items = buffers.items;
  a.slot_indptr = buffers.slot_indptr;
  a.part_m = buffers.part_m;
  a.part_s = buffers.part_s;
  a.part_o = buffers.part_o;
  a.out = b.out;
  a.num_kv_heads = b.num_kv_heads;
  a.group = b.group;
  a.head_dim = b.head_dim;
  return a;
}

}  // namespace kvspan::kernels::internal
