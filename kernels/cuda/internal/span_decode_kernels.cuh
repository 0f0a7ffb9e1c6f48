// The kernels of CudaSpanAttention (span_attention_cuda.h), written against
// cuda_compat.h so that the same source runs on the GPU (span_attention_cuda.cu) and in
// the CPU emulator (span_attention_emulated_test.cc).
//
// SpanDecodePartialKernel: one CUDA block per (work item, chunk of kSpanDecodeRows query
// rows), kSpanDecodeWarps warps. Lane l of a warp owns channels d = l + 32 i (i < kCpl);
// each warp takes a strided subset of the item's entries, dequantizes the entry's key at
// its channels, reduces the rows' dot products across the warp with shuffles, and runs an
// online softmax per row in fp32 (m, s and the lane's o channels in registers). The warps'
// states are merged by log-sum-exp through shared memory into the item's partial.
// SpanDecodeMergeKernel: one CUDA block per (sequence, head) merges its items' partials
// and writes o / s.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_KERNELS_CUH_
#define KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_KERNELS_CUH_

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/internal/cuda_compat.h"
#include "kernels/cuda/internal/span_decode_plan.h"
#include "kernels/span_attention.h"

namespace kvspan::kernels::internal {

inline constexpr int kSpanDecodeWarps = 4;
inline constexpr int kSpanDecodeThreads = kSpanDecodeWarps * 32;
inline constexpr int kSpanDecodeRows = 8;  // query rows (heads of a GQA group) per CUDA block

// Channels per lane the kernel is instantiated for: 1, 2, 4 or 8 (head_dim <= 256).
inline int SpanDecodeChannelsPerLane(int head_dim) {
  const int cpl = (head_dim + 31) / 32;
  return cpl <= 1 ? 1 : cpl <= 2 ? 2 : cpl <= 4 ? 4 : 8;
}

// Calls f(std::integral_constant<int, kCpl>{}) with SpanDecodeChannelsPerLane(head_dim).
template <typename F>
void DispatchChannelsPerLane(int head_dim, F&& f) {
  switch (SpanDecodeChannelsPerLane(head_dim)) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

// SpanCodecBits (span_attention.h) for device code.
KVSPAN_DEVICE int DeviceCodecBits(SpanCodec codec) {
  switch (codec) {
    case SpanCodec::kInt8: return 8;
    case SpanCodec::kInt4: return 4;
    case SpanCodec::kInt2: return 2;
    default: return 16;
  }
}

// Channel d of a stored row: the 16-bit pattern or the unsigned B-bit code (B divides 8, so
// a code never straddles bytes; least significant bits first).
KVSPAN_DEVICE uint32_t LoadSpanCode(const uint8_t* row, int bits, int d) {
  if (bits == 16) return row[2 * d] | (uint32_t{row[2 * d + 1]} << 8);
  const int bit = d * bits;
  return (row[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1);
}

// The dequantized key (kIsKey) or value of entry e at this lane's channels d = lane + 32 i,
// as SpanAttentionRef's Dequantize: zero + code * scale in fp32 from fp16 (scale, zero);
// channels past D read 0.
template <int kCpl, bool kIsKey>
KVSPAN_DEVICE void DequantizeSpanEntry(const SpanBlockView& b, int bits, int e, int lane, float (&x)[kCpl]) {
  const int hd = b.head_dim;
  const int64_t row_bytes = (int64_t{hd} * bits + 7) / 8;
  const uint8_t* row = (kIsKey ? b.key_data : b.value_data) + e * row_bytes;
  const uint16_t* params = kIsKey ? b.key_params : b.value_params;
  KVSPAN_UNROLL
  for (int i = 0; i < kCpl; ++i) {
    const int d = lane + 32 * i;
    x[i] = 0.0f;
    if (d >= hd) continue;
    const uint32_t code = LoadSpanCode(row, bits, d);
    if (b.codec == SpanCodec::kBF16) {
      x[i] = Bf16BitsToFloat(code);
    } else if (b.codec == SpanCodec::kFP16) {
      x[i] = Fp16BitsToFloat(static_cast<uint16_t>(code));
    } else {
      int64_t param;
      if (kIsKey) {
        param = (int64_t{e / b.group_size} * hd + d) * 2;  // [ceil(n/G), D, 2]
      } else {
        const int groups = (hd + b.group_size - 1) / b.group_size;
        param = (int64_t{e} * groups + d / b.group_size) * 2;  // [n, ceil(D/G), 2]
      }
      const float scale = Fp16BitsToFloat(params[param]);
      const float zero = Fp16BitsToFloat(params[param + 1]);
      x[i] = zero + static_cast<float>(code) * scale;
    }
  }
}

// dot[r] = the sum over the warp's lanes of q[r] . k (every lane gets the sum).
template <int kCpl>
KVSPAN_DEVICE void WarpRowDots(const float (&q)[kSpanDecodeRows][kCpl], const float (&k)[kCpl],
                               float (&dot)[kSpanDecodeRows]) {
  KVSPAN_UNROLL
  for (int r = 0; r < kSpanDecodeRows; ++r) {
    float acc = 0.0f;
    KVSPAN_UNROLL
    for (int i = 0; i < kCpl; ++i) acc = fmaf(q[r][i], k[i], acc);
    KVSPAN_UNROLL
    for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    dot[r] = acc;
  }
}

// Online softmax: adds one entry (its logit and value v, weighted by value_scale) to a row.
template <int kCpl>
KVSPAN_DEVICE void AccumulateEntry(float logit, const float (&v)[kCpl], float value_scale, float& m, float& s,
                                   float (&o)[kCpl]) {
  const float m_new = fmaxf(m, logit);
  const float c = expf(m - m_new);  // 0 while the state is empty (m = -inf)
  const float p = expf(logit - m_new);
  s = s * c + p;
  const float pv = p * value_scale;
  KVSPAN_UNROLL
  for (int i = 0; i < kCpl; ++i) o[i] = fmaf(pv, v[i], o[i] * c);
  m = m_new;
}

template <int kCpl>
KVSPAN_GLOBAL(kSpanDecodeThreads) SpanDecodePartialKernel(SpanDecodePartialArgs a) {
  const SpanDecodeWorkItem w = a.items[blockIdx.x];
  const int item_rows = w.num_q * a.group;
  const int row0 = blockIdx.y * kSpanDecodeRows;
  if (row0 >= item_rows) return;  // the whole block: before any barrier
  const int rows = item_rows - row0 < kSpanDecodeRows ? item_rows - row0 : kSpanDecodeRows;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int hd = a.head_dim;
  // The dense tail's first query sits at q_start; query j sees tail keys
  // [q_start + j - window + 1, q_start + j] and span entries at positions > position_j - window.
  const int q_start = w.tail_len - w.num_q;
  const int j_first = row0 / a.group;
  const int j_last = (row0 + rows - 1) / a.group;

  // The rows' queries, pre-multiplied by the softmax scale; rows past the item's are 0.
  float q[kSpanDecodeRows][kCpl];
  int row_j[kSpanDecodeRows];
  KVSPAN_UNROLL
  for (int r = 0; r < kSpanDecodeRows; ++r) {
    const int row = row0 + (r < rows ? r : rows - 1);
    row_j[r] = row / a.group;
    const float* q_row = a.q + int64_t{w.q_row + row_j[r]} * a.q_row_stride +
                         (int64_t{w.head} * a.group + row % a.group) * hd;
    KVSPAN_UNROLL
    for (int i = 0; i < kCpl; ++i) {
      const int d = lane + 32 * i;
      q[r][i] = (r < rows && d < hd) ? q_row[d] * a.scale : 0.0f;
    }
  }
  float m[kSpanDecodeRows], s[kSpanDecodeRows], o[kSpanDecodeRows][kCpl];
  KVSPAN_UNROLL
  for (int r = 0; r < kSpanDecodeRows; ++r) {
    m[r] = -INFINITY;
    s[r] = 0.0f;
    KVSPAN_UNROLL
    for (int i = 0; i < kCpl; ++i) o[r][i] = 0.0f;
  }

  float k[kCpl], v[kCpl], dot[kSpanDecodeRows];
  for (int bi = w.block_begin; bi < w.block_end; ++bi) {
    const SpanBlockView b = a.blocks[bi];
    const int bits = DeviceCodecBits(b.codec);
    for (int e = warp; e < b.num_entries; e += kSpanDecodeWarps) {
      // Under a sliding window an entry at or before position_j - window is hidden from
      // query j; from every row when hidden from the earliest.
      const int position = a.window > 0 ? b.positions[e] : 0;
      if (a.window > 0 && position <= w.query_position + j_first - a.window) continue;
      DequantizeSpanEntry<kCpl, true>(b, bits, e, lane, k);
      WarpRowDots(q, k, dot);
      DequantizeSpanEntry<kCpl, false>(b, bits, e, lane, v);
      const float key_scale = b.key_scales == nullptr ? 1.0f : b.key_scales[e];
      const float log_count = b.log_counts == nullptr ? 0.0f : b.log_counts[e];
      const float value_scale = b.value_scales == nullptr ? 1.0f : b.value_scales[e];
      KVSPAN_UNROLL
      for (int r = 0; r < kSpanDecodeRows; ++r) {
        if (a.window > 0 && position <= w.query_position + row_j[r] - a.window) continue;
        AccumulateEntry(key_scale * dot[r] + log_count, v, value_scale, m[r], s[r], o[r]);
      }
    }
  }
  // The dense tail, causal: keys past the latest row's query are hidden from every row, and
  // under a window so are keys before the earliest row's window.
  int tail_first = w.tail_begin;
  if (a.window > 0 && q_start + j_first - a.window + 1 > tail_first) tail_first = q_start + j_first - a.window + 1;
  const int tail_end = w.tail_end < q_start + j_last + 1 ? w.tail_end : q_start + j_last + 1;
  for (int t = tail_first + warp; t < tail_end; t += kSpanDecodeWarps) {
    const float* kt = w.tail_k + t * a.tail_token_stride;
    const float* vt = w.tail_v + t * a.tail_token_stride;
    KVSPAN_UNROLL
    for (int i = 0; i < kCpl; ++i) {
      const int d = lane + 32 * i;
      k[i] = d < hd ? kt[d] : 0.0f;
      v[i] = d < hd ? vt[d] : 0.0f;
    }
    WarpRowDots(q, k, dot);
    KVSPAN_UNROLL
    for (int r = 0; r < kSpanDecodeRows; ++r) {
      const int last = q_start + row_j[r];
      if (t > last || (a.window > 0 && t <= last - a.window)) continue;
      AccumulateEntry(dot[r], v, 1.0f, m[r], s[r], o[r]);
    }
  }

  // Merge the warps' states (log-sum-exp) and write the work item's partial.
  __shared__ float sm_m[kSpanDecodeWarps][kSpanDecodeRows];
  __shared__ float sm_s[kSpanDecodeWarps][kSpanDecodeRows];
  __shared__ float sm_o[kSpanDecodeWarps][kSpanDecodeRows][kCpl * 32];
  KVSPAN_UNROLL
  for (int r = 0; r < kSpanDecodeRows; ++r) {
    if (lane == 0) {
      sm_m[warp][r] = m[r];
      sm_s[warp][r] = s[r];
    }
    KVSPAN_UNROLL
    for (int i = 0; i < kCpl; ++i) sm_o[warp][r][lane + 32 * i] = o[r][i];
  }
  __syncthreads();
  const int64_t row_base = w.row_offset + row0;
  for (int idx = threadIdx.x; idx < rows * hd; idx += kSpanDecodeThreads) {
    const int r = idx / hd;
    const int d = idx % hd;
    float mx = -INFINITY;
    KVSPAN_UNROLL
    for (int wi = 0; wi < kSpanDecodeWarps; ++wi) mx = fmaxf(mx, sm_m[wi][r]);
    float sum = 0.0f, acc = 0.0f;
    if (mx > -INFINITY) {
      KVSPAN_UNROLL
      for (int wi = 0; wi < kSpanDecodeWarps; ++wi) {
        const float c = expf(sm_m[wi][r] - mx);  // 0 for a warp that saw no entry
        sum += sm_s[wi][r] * c;
        acc += sm_o[wi][r][d] * c;
      }
    }
    if (d == 0) {
      a.part_m[row_base + r] = mx;
      a.part_s[row_base + r] = sum;
    }
    a.part_o[(row_base + r) * hd + d] = acc;
  }
}

// One CUDA block per (sequence, head): merges its items' partials row by row and writes
// o / s (0 for a row that saw no entry, as FinishPartial). Every head has >= 1 item.
KVSPAN_GLOBAL(kSpanDecodeThreads) SpanDecodeMergeKernel(SpanDecodeMergeArgs a) {
  const int sh = blockIdx.x;
  const int slot_begin = a.slot_indptr[sh];
  const int slot_end = a.slot_indptr[sh + 1];
  const SpanDecodeWorkItem& first = a.items[slot_begin];
  const int hd = a.head_dim;
  const int item_rows = first.num_q * a.group;
  for (int idx = threadIdx.x; idx < item_rows * hd; idx += blockDim.x) {
    const int r = idx / hd;
    const int d = idx % hd;
    float mx = -INFINITY;
    for (int slot = slot_begin; slot < slot_end; ++slot) mx = fmaxf(mx, a.part_m[a.items[slot].row_offset + r]);
    float sum = 0.0f, acc = 0.0f;
    if (mx > -INFINITY) {
      for (int slot = slot_begin; slot < slot_end; ++slot) {
        const int64_t row = a.items[slot].row_offset + r;
        const float c = expf(a.part_m[row] - mx);
        sum += a.part_s[row] * c;
        acc += a.part_o[row * hd + d] * c;
      }
    }
    const int j = r / a.group;
    const int h = r % a.group;
    a.out[((int64_t{first.q_row + j} * a.num_kv_heads + first.head) * a.group + h) * hd + d] =
        sum > 0.0f ? acc / sum : 0.0f;
  }
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_SPAN_DECODE_KERNELS_CUH_
