// Fast fp32 attention: one task per (query head, block of queries). Each query runs an
// online softmax over tiles of keys (the flash-attention recurrence), accumulating
// straight into its output row, so no scratch memory is allocated. With AVX2 and a head
// dimension that is a multiple of 8, the block's queries go through each key tile
// together (AttendBlock): scores two queries by four keys at a time in registers, the
// tile's softmax weights vectorized, and its values added two queries at a time, so
// every key and value row loaded serves two queries; otherwise query by query
// (AttendOne).
#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cpu/vec.h"

namespace kvspan::kernels {
namespace {

constexpr int kKeyTile = 64;
constexpr int kQueryBlock = 8;

// Attention of query j, head h. Accumulates into `out` (head_dim floats).
void AttendOne(const AttentionParams& p, int j, int h) {
  const int group = p.num_heads / p.num_kv_heads;
  const int g = h / group;
  const int pos = p.q_start + j;
  const int first = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
  const float* q = p.q + j * p.q_row_stride + h * p.head_dim;
  const float* k_head = p.k + g * p.k_head_stride;
  const float* v_head = p.v + g * p.v_head_stride;
  float* out = p.out + j * p.out_row_stride + h * p.head_dim;
  std::fill(out, out + p.head_dim, 0.0f);

  float scores[kKeyTile];
  float running_max = -INFINITY;
  float running_sum = 0.0f;
  for (int tile = first; tile <= pos; tile += kKeyTile) {
    const int n = std::min(kKeyTile, pos + 1 - tile);
    float tile_max = -INFINITY;
    for (int i = 0; i < n; ++i) {
      scores[i] = internal::Dot(q, k_head + (tile + i) * p.k_token_stride, p.head_dim) * p.scale;
      tile_max = std::max(tile_max, scores[i]);
    }
    const float new_max = std::max(running_max, tile_max);
    // exp(-inf) == 0 on the first tile: the empty accumulator is scaled by 0.
    const float correction = std::exp(running_max - new_max);
    running_sum *= correction;
    for (int i = 0; i < n; ++i) {
      const float w = std::exp(scores[i] - new_max);
      running_sum += w;
      const float* v = v_head + (tile + i) * p.v_token_stride;
      if (i == 0) {
        internal::ScaleAndAxpy(correction, w, v, out, p.head_dim);
      } else {
        internal::Axpy(w, v, out, p.head_dim);
      }
    }
    running_max = new_max;
  }
  internal::Scale(1.0f / running_sum, out, p.head_dim);
}

#if defined(__AVX2__) && defined(__FMA__)
// Lane i = the sum of a[i]'s 8 lanes.
inline __m256 Sum8(const __m256 (&a)[8]) {
  const __m256 h0123 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 h4567 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  // Each 128-bit half of h0123 holds a[0..3]'s sums over that half of their lanes.
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// out_a += Σ_t w_a[t] · v_t[c, c + 8 NV) (and out_b with w_b, when out_b is set), for the
// tile's n value rows from `v`.
template <int NV>
void AddValues(const float* v, int64_t v_stride, int n, const float* w_a, const float* w_b, float* out_a,
               float* out_b) {
  __m256 oa[NV], ob[NV];
  // NOTE: every loop over NV is unrolled by pragma: GCC keeps oa / ob in memory otherwise.
  #pragma GCC unroll 4
  for (int i = 0; i < NV; ++i) {
    oa[i] = _mm256_loadu_ps(out_a + 8 * i);
    ob[i] = out_b != nullptr ? _mm256_loadu_ps(out_b + 8 * i) : _mm256_setzero_ps();
  }
  for (int t = 0; t < n; ++t, v += v_stride) {
    const __m256 pa = _mm256_set1_ps(w_a[t]), pb = _mm256_set1_ps(w_b[t]);
    #pragma GCC unroll 4
    for (int i = 0; i < NV; ++i) {
      const __m256 vv = _mm256_loadu_ps(v + 8 * i);
      oa[i] = _mm256_fmadd_ps(pa, vv, oa[i]);
      ob[i] = _mm256_fmadd_ps(pb, vv, ob[i]);
    }
  }
  #pragma GCC unroll 4
  for (int i = 0; i < NV; ++i) {
    _mm256_storeu_ps(out_a + 8 * i, oa[i]);
    if (out_b != nullptr) _mm256_storeu_ps(out_b + 8 * i, ob[i]);
  }
}

// Queries [j0, j0 + nq) of head h (nq <= kQueryBlock) through each key tile together: the
// same recurrence as AttendOne per query. REQUIRES: head_dim % 8 == 0.
void AttendBlock(const AttentionParams& p, int j0, int nq, int h) {
  const int group = p.num_heads / p.num_kv_heads;
  const int g = h / group;
  const int d = p.head_dim;
  const float* k_head = p.k + g * p.k_head_stride;
  const float* v_head = p.v + g * p.v_head_stride;
  const float* q[kQueryBlock];
  float* out[kQueryBlock];
  int first[kQueryBlock], last[kQueryBlock];
  float running_max[kQueryBlock], running_sum[kQueryBlock];
  int lo = INT_MAX, hi = 0;
  for (int a = 0; a < nq; ++a) {
    const int pos = p.q_start + j0 + a;
    first[a] = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
    last[a] = pos;
    lo = std::min(lo, first[a]);
    hi = std::max(hi, pos);
    q[a] = p.q + (j0 + a) * p.q_row_stride + h * d;
    out[a] = p.out + (j0 + a) * p.out_row_stride + h * d;
    std::fill(out[a], out[a] + d, 0.0f);
    running_max[a] = -INFINITY;
    running_sum[a] = 0.0f;
  }
  alignas(32) float w[kQueryBlock][kKeyTile];
  for (int t0 = lo; t0 <= hi; t0 += kKeyTile) {
    const int n = std::min(kKeyTile, hi + 1 - t0);
    // Scores: queries a and b (= a + 1, or a again for the last of an odd count) against
    // four keys at a time (past the tile: its last key again, dropped).
    for (int a = 0; a < nq; a += 2) {
      const int b = std::min(a + 1, nq - 1);
      for (int t = 0; t < n; t += 4) {
        const float* kr[4];
        #pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) kr[u] = k_head + std::min(t0 + t + u, hi) * p.k_token_stride;
        // NOTE: the loops over acc are unrolled by pragma: GCC keeps acc in memory otherwise.
        __m256 acc[8];
        #pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
        for (int c = 0; c < d; c += 8) {
          const __m256 qa = _mm256_loadu_ps(q[a] + c), qb = _mm256_loadu_ps(q[b] + c);
          #pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) {
            const __m256 kv = _mm256_loadu_ps(kr[u] + c);
            acc[u] = _mm256_fmadd_ps(qa, kv, acc[u]);
            acc[4 + u] = _mm256_fmadd_ps(qb, kv, acc[4 + u]);
          }
        }
        alignas(32) float sums[8];
        _mm256_store_ps(sums, _mm256_mul_ps(Sum8(acc), _mm256_set1_ps(p.scale)));
        for (int u = 0; u < 4 && t + u < n; ++u) {
          w[a][t + u] = sums[u];
          w[b][t + u] = sums[4 + u];
        }
      }
    }
    // Per query: keys outside its range to -inf, then the online softmax's step; its
    // output row is rescaled by the correction before the tile's values are added.
    for (int a = 0; a < nq; ++a) {
      float* row = w[a];
      if (t0 < first[a] || t0 + n - 1 > last[a]) {
        for (int t = 0; t < n; ++t) {
          if (t0 + t < first[a] || t0 + t > last[a]) row[t] = -INFINITY;
        }
      }
      const float tile_max = internal::MaxOf(row, n);
      if (tile_max == -INFINITY) {  // no key of this tile is in the query's range
        std::fill(row, row + n, 0.0f);
        continue;
      }
      const float new_max = std::max(running_max[a], tile_max);
      // exp(-inf) == 0 on the query's first tile: the empty accumulator is scaled by 0.
      const float correction = std::exp(running_max[a] - new_max);
      running_sum[a] = running_sum[a] * correction + internal::ExpShiftedAndSum(row, n, new_max);
      running_max[a] = new_max;
      internal::Scale(correction, out[a], d);
    }
    for (int a = 0; a < nq; a += 2) {
      float* out_b = a + 1 < nq ? out[a + 1] : nullptr;
      const float* w_b = a + 1 < nq ? w[a + 1] : w[a];
      const float* v = v_head + t0 * p.v_token_stride;
      int c = 0;
      for (; c + 32 <= d; c += 32) AddValues<4>(v + c, p.v_token_stride, n, w[a], w_b, out[a] + c, out_b ? out_b + c : nullptr);
      for (; c < d; c += 8) AddValues<1>(v + c, p.v_token_stride, n, w[a], w_b, out[a] + c, out_b ? out_b + c : nullptr);
    }
  }
  for (int a = 0; a < nq; ++a) internal::Scale(1.0f / running_sum[a], out[a], d);
}
#endif

}  // namespace

void Attention(const AttentionParams& p, ThreadPool* pool) {
  const int num_blocks = (p.num_q + kQueryBlock - 1) / kQueryBlock;
  const int64_t num_tasks = static_cast<int64_t>(p.num_heads) * num_blocks;
  auto task = [&p, num_blocks](int64_t t) {
    const int h = static_cast<int>(t / num_blocks);
    const int block = static_cast<int>(t % num_blocks);
    const int end = std::min(p.num_q, (block + 1) * kQueryBlock);
#if defined(__AVX2__) && defined(__FMA__)
    if (p.head_dim % 8 == 0) {
      AttendBlock(p, block * kQueryBlock, end - block * kQueryBlock, h);
      return;
    }
#endif
    for (int j = block * kQueryBlock; j < end; ++j) AttendOne(p, j, h);
  };
  if (pool == nullptr) {
    for (int64_t t = 0; t < num_tasks; ++t) task(t);
  } else {
    pool->ParallelFor(num_tasks, task);
  }
}

}  // namespace kvspan::kernels
