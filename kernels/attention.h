// Causal multi-head attention of a block of new queries over one sequence's keys and
// values, with grouped-query heads (GQA) and an optional sliding window.
//
//   out[j, h, :] = sum_t softmax_t(scale * <q[j, h, :], k[g(h), t, :]>) * v[g(h), t, :]
//
// over the keys t in [max(0, q_start + j - window + 1), q_start + j] (window == 0: from 0),
// where g(h) = h / (num_heads / num_kv_heads) is the KV head that query head h reads.
// This is the layout of HF transformers' repeat_kv: query heads [g*G, (g+1)*G) share KV
// head g.
//
// AttentionRef (cpu/attention_ref.cc) is plain loops in double precision: the
// specification. Attention (cpu/attention.cc) is the fast fp32 path: online softmax over
// key tiles, AVX2 inner loops, parallel over (head, query block). Both are pure
// functions of their inputs; they are thread-safe for disjoint `out` buffers.
#ifndef KVSPAN_KERNELS_ATTENTION_H_
#define KVSPAN_KERNELS_ATTENTION_H_

#include <cstdint>

#include "common/thread_pool.h"

namespace kvspan::kernels {

struct AttentionParams {
  // [num_q, num_heads, head_dim]: element (j, h, d) at q[j * q_row_stride + h * head_dim + d].
  const float* q = nullptr;
  int64_t q_row_stride = 0;  // floats; >= num_heads * head_dim
  // [num_kv_heads, num_keys, head_dim]: element (g, t, d) at
  // k[g * k_head_stride + t * k_token_stride + d]. Same for v with its own strides.
  const float* k = nullptr;
  int64_t k_head_stride = 0;
  int64_t k_token_stride = 0;
  const float* v = nullptr;
  int64_t v_head_stride = 0;
  int64_t v_token_stride = 0;
  // [num_q, num_heads, head_dim]: element (j, h, d) at out[j * out_row_stride + h * head_dim + d].
  float* out = nullptr;
  int64_t out_row_stride = 0;  // floats; >= num_heads * head_dim

  int num_q = 0;         // new queries, >= 1
  int num_keys = 0;      // keys of the sequence, >= q_start + num_q
  int num_heads = 0;     // query heads; a multiple of num_kv_heads
  int num_kv_heads = 0;  // >= 1
  int head_dim = 0;      // >= 1
  int q_start = 0;       // query j sits at key index q_start + j (its position)
  int window = 0;        // sliding window in keys; 0 = none (full causal)
  float scale = 1.0f;    // usually 1 / sqrt(head_dim)
};

// Plain-loop reference in double precision. REQUIRES: the params invariants above.
void AttentionRef(const AttentionParams& p);

// Fast fp32 path. `pool` (borrowed for the call) may be null: runs on the caller's thread.
// REQUIRES: the params invariants above.
void Attention(const AttentionParams& p, ThreadPool* pool);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_ATTENTION_H_
