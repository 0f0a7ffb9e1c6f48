// Attention over compressed KV spans: the queries of one KV head attend to one entry
// block (kvcache/entry_block.h) read straight from its stored layout, producing a
// *partial* softmax state that is merged (log-sum-exp) with the partials of other blocks
// and of the uncompressed recent window, then finished into the attention output.
//
// Partial state of one row r (a (query j, query head h of the group) pair, r = j * group + h):
//   m = max over the keys seen so far of logit
//   s = sum exp(logit - m)
//   o = sum exp(logit - m) * v          (head_dim floats, unnormalized)
// and the attention output is o / s (FinishPartial). An empty state is m = -inf, s = 0,
// o = 0 (InitPartial). Logit of a compressed entry e:
//   scale * key_scale_e * <q, k_hat_e> + log_count_e,
// and the entry adds weight * value_scale_e * v_hat_e to o, where k_hat/v_hat are the
// dequantized key/value (x = zero + code * scale in fp32 with fp16 scale/zero, or the raw
// bf16/fp16 value; docs/span-format.md) and key_scale/value_scale are the per-entry
// magnitude factors of cross-layer shared blocks (MiniCache, arXiv 2405.14366; 1 when
// absent). Keys and values may come from different stored blocks (PoD, arXiv 2412.02252:
// an upper layer's own values with a lower layer's keys): the view carries separate
// pointers, with one codec and group size for both.
//
// NO causal mask inside compressed blocks: every entry of a compressed span lies wholly
// before every query that reads it (spans cover committed positions only), so all entries
// are visible to all queries — except under a model's sliding window, which masks the
// entries at positions <= query position - window (SpanAttentionParams::window). The dense
// window partial (DenseAttentionPartial) is causal, optionally windowed too.
//
// SpanAttentionRef / DenseAttentionPartialRef (cpu/span_attention_ref.cc) are plain loops
// in double precision: the specification. SpanAttention / DenseAttentionPartial
// (cpu/span_attention.cc) are the fast paths. Keys: dequantization fused into the dot
// products (per key group the query is pre-multiplied by the channel scales, so a logit is
// one dot product with the raw codes plus a constant); for int8/int4/int2 keys that dot
// product is either fp32 (SpanKeyDot::kFloat) or, with SpanKeyDot::kInt8Query, an exact
// integer sum of the codes with the pre-scaled query quantized to int8 per key group and
// row (AVX-512 VNNI vpdpbusd, or AVX2 vpmaddubsw / vpmaddwd; SpanKeyDot states the bound).
// Every K/V row of a block is read and unpacked once for all the rows (query heads of the GQA
// group and queries) of a call. Values: the block's rows are decoded once into a
// per-thread scratch of num_entries x head_dim floats (32 KiB for a 64-entry span at
// head_dim 128, L1-sized), so each output row accumulates in registers over all entries
// (docs/performance.md, span_attention_bench). All functions are pure functions of their
// inputs and thread-safe for disjoint partial states.
#ifndef KVSPAN_KERNELS_SPAN_ATTENTION_H_
#define KVSPAN_KERNELS_SPAN_ATTENTION_H_

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/cpu_isa.h"

namespace kvspan::kernels {

// Mirrors kvcache::Codec's serialized ids (kernels/ does not depend on kvcache/; the
// span attention test checks the mirror).
enum class SpanCodec : uint8_t {
  kBF16 = 1,
  kFP16 = 2,
  kInt8 = 3,
  kInt4 = 4,
  kInt2 = 5,
};

// Bits per stored element: 16 (bf16, fp16), 8, 4, 2.
inline int SpanCodecBits(SpanCodec codec) {
  switch (codec) {
    case SpanCodec::kInt8: return 8;
    case SpanCodec::kInt4: return 4;
    case SpanCodec::kInt2: return 2;
    default: return 16;
  }
}

// One entry block of one KV head, borrowed; layout exactly as kvcache::EntryBlock stores
// it. n = num_entries, D = head_dim, G = group_size, B = bits (16, 16, 8, 4, 2),
// R = ceil(D * B / 8) bytes per row.
struct SpanBlockView {
  SpanCodec codec = SpanCodec::kBF16;
  int group_size = 0;   // quantized codecs: >= 1; bf16/fp16: ignored
  int num_entries = 0;  // n >= 0 (0: the block contributes nothing)
  int head_dim = 0;     // D >= 1
  // [n, R]: bf16/fp16: D little-endian 16-bit values per row; quantized: codes of channel
  // d at bit (d*B) % 8 of byte (d*B) / 8, least significant bits first.
  const uint8_t* key_data = nullptr;
  const uint8_t* value_data = nullptr;  // [n, R], as keys
  // Quantized only: [ceil(n/G), D, 2] fp16 (scale, zero): keys grouped per channel over G
  // consecutive entries.
  const uint16_t* key_params = nullptr;
  // Quantized only: [n, ceil(D/G), 2] fp16 (scale, zero): values grouped per token over G
  // consecutive channels.
  const uint16_t* value_params = nullptr;
  const float* log_counts = nullptr;  // [n] or null (all 0)
  // Per-entry magnitude factors of a shared block, decoded from fp16 once per span by the
  // caller: [n] or null (all 1). Finite, >= 0.
  const float* key_scales = nullptr;
  const float* value_scales = nullptr;
  // [n] entry positions (kvcache::EntryBlock::positions); read only with a sliding window.
  const int32_t* positions = nullptr;
};

// Partial softmax states of num_rows rows, borrowed. Row r = j * group + h.
struct PartialState {
  float* m = nullptr;  // [num_rows] running max logit (-inf when empty)
  float* s = nullptr;  // [num_rows] sum of exp(logit - m)
  float* o = nullptr;  // [num_rows, head_dim] sum of exp(logit - m) * v
};

// How the key dot products of a quantized (int8/int4/int2) block are computed; bf16/fp16
// blocks always take the fp32 path.
enum class SpanKeyDot : uint8_t {
  // fp32: qs = scale * q * kscale_g (per channel) dotted with the codes as floats; the
  // fp32 rounding of head_dim products is the only error.
  kFloat = 0,
  // Integer domain. Per key group g and row, the pre-scaled query qs_d = q_d * (scale *
  // kscale_{g,d}) (fp32) is quantized by QuantizeRowInt8 (weight_matrix.h): s_q = max_d
  // |qs_d| / 127, qhat_d = round-half-even(qs_d / s_q) in [-127, 127]. With c = 2^(B-1)
  // (the codes' midpoint; B = 8, 4, 2 bits):
  //   logit_e = key_scale_e * (sum_d scale q_d zero_{g,d} + c sum_d qs_d
  //                            + s_q sum_d qhat_d (code_{e,d} - c)) + log_count_e,
  // the last sum exact in int32. It differs from the exact logit only by qs_d - s_q qhat_d
  // (at most s_q / 2 per channel):
  //   |logit_e - exact_e| <= key_scale_e * (s_q / 2) * sum_d |code_{e,d} - c|
  // plus fp32 rounding. Centering the codes at c halves this bound against raw codes
  // (sum |code - c| is about D * 2^B / 4 for uniform codes).
  kInt8Query = 1,
};

struct SpanAttentionParams {
  SpanBlockView block;
  // [num_q, group, head_dim]: element (j, h, d) at q[j * q_row_stride + h * head_dim + d];
  // the `group` query heads that share this KV head.
  const float* q = nullptr;
  int64_t q_row_stride = 0;  // floats, >= group * head_dim
  int num_q = 0;             // >= 1
  int group = 0;             // query heads per KV head, >= 1
  float scale = 1.0f;        // usually 1 / sqrt(head_dim)
  // In/out: the block's keys are merged into these num_q * group states.
  PartialState state;
  // Sliding window (the model's; 0 = none): query j, at sequence position
  // first_query_position + j, sees only the entries whose position is greater than
  // first_query_position + j - window. REQUIRES block.positions when window > 0.
  int window = 0;
  int32_t first_query_position = 0;
  SpanKeyDot key_dot = SpanKeyDot::kFloat;  // quantized blocks' key dot products
};

// Causal attention partial over dense fp32 keys/values of one KV head (the recent window).
struct DensePartialParams {
  const float* q = nullptr;  // as SpanAttentionParams::q
  int64_t q_row_stride = 0;
  int num_q = 0;   // >= 1
  int group = 0;   // >= 1
  int head_dim = 0;
  // [num_keys, head_dim]: key t at k[t * k_token_stride]; values alike.
  const float* k = nullptr;
  int64_t k_token_stride = 0;
  const float* v = nullptr;
  int64_t v_token_stride = 0;
  int num_keys = 0;  // >= q_start + num_q
  int q_start = 0;   // query j sees keys [0, q_start + j]; >= 0
  float scale = 1.0f;
  PartialState state;  // in/out, num_q * group rows
  // Sliding window (0 = none): query j sees only keys [q_start + j - window + 1, q_start + j].
  int window = 0;
};

// Sets num_rows states to empty (m = -inf, s = 0, o = 0).
void InitPartial(PartialState state, int num_rows, int head_dim);

// Merges `from` into `into`, row by row (log-sum-exp): m = max(m1, m2),
// s = s1 e^(m1-m) + s2 e^(m2-m), o = o1 e^(m1-m) + o2 e^(m2-m). Empty rows are identities.
void MergePartial(const PartialState& from, PartialState into, int num_rows, int head_dim);

// out[j * out_row_stride + h * head_dim + d] = o[r, d] / s[r] for r = j * group + h;
// a row with s = 0 (no keys) writes zeros.
void FinishPartial(const PartialState& state, int num_q, int group, int head_dim, float* out,
                   int64_t out_row_stride);

// Double-precision references (the specification). REQUIRES: the invariants above.
void SpanAttentionRef(const SpanAttentionParams& p);
void DenseAttentionPartialRef(const DensePartialParams& p);

// Fast paths. `pool` (borrowed for the call, may be null) splits the queries when the
// block is large enough to pay for it. SpanAttention runs SelectedCpuIsa()'s kernels
// (cpu_isa.h: AVX-512 VNNI where present, else AVX2); the overload takes the ISA (tests
// run both). REQUIRES: the invariants above; the CPU supports `isa`.
void SpanAttention(const SpanAttentionParams& p, ThreadPool* pool);
void SpanAttention(const SpanAttentionParams& p, ThreadPool* pool, CpuIsa isa);
void DenseAttentionPartial(const DensePartialParams& p, ThreadPool* pool);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_SPAN_ATTENTION_H_
