// Small fp32 vector helpers shared by the CPU kernels (AVX2+FMA where compiled for it,
// scalar otherwise). Private to kernels/: not a public header.
#ifndef KVSPAN_KERNELS_CPU_VEC_H_
#define KVSPAN_KERNELS_CPU_VEC_H_

#include <algorithm>
#include <cmath>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace kvspan::kernels::internal {

#if defined(__AVX2__) && defined(__FMA__)
inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x55));
  return _mm_cvtss_f32(lo);
}
#endif

// Returns sum_i a[i] * b[i].
inline float Dot(const float* a, const float* b, int n) {
  int i = 0;
  float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[i] = y[i] * c + a * x[i].
inline void ScaleAndAxpy(float c, float a, const float* x, float* y, int n) {
  int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vc = _mm256_set1_ps(c);
  const __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) {
    __m256 vy = _mm256_mul_ps(_mm256_loadu_ps(y + i), vc);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), vy));
  }
#endif
  for (; i < n; ++i) y[i] = y[i] * c + a * x[i];
}

// out[i] = a[i] * b[i].
inline void Multiply(const float* a, const float* b, float* out, int n) {
  int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
#endif
  for (; i < n; ++i) out[i] = a[i] * b[i];
}

// y[i] += a * x[i].
inline void Axpy(float a, const float* x, float* y, int n) {
  int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
#endif
  for (; i < n; ++i) y[i] += a * x[i];
}

// x[i] *= c.
inline void Scale(float c, float* x, int n) {
  int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vc = _mm256_set1_ps(c);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vc));
#endif
  for (; i < n; ++i) x[i] *= c;
}

#if defined(__AVX2__) && defined(__FMA__)
// exp(x) for x <= 0 (softmax weights), relative error ~2^-23 (Cephes' expf: 2^k times a
// degree-7 polynomial on [-ln2/2, ln2/2]); 0 below -87 (e^-87 < 2^-125), also for -inf.
inline __m256 ExpNonPositive(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);  // x - k ln2, ln2 in two parts
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 poly = _mm256_set1_ps(1.9875691500e-4f);
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.3981999507e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(8.3334519073e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(4.1665795894e-2f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.6666665459e-1f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(5.0000001201e-1f));
  poly = _mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(poly, _mm256_castsi256_ps(pow2k)));
}
#endif

// y[i] += x[i] for i < n.
inline void AddInPlace(const float* x, float* y, int n) {
  int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) y[i] += x[i];
}

// max(-inf, x[0], ..., x[n - 1]) (x has no NaN).
inline float MaxOf(const float* x, int n) {
  int i = 0;
  float best = -INFINITY;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float lane : lanes) best = std::max(best, lane);
#endif
  for (; i < n; ++i) best = std::max(best, x[i]);
  return best;
}

// x[i] = exp(x[i] - shift) for i < n (every x[i] <= shift, or -inf); returns their sum.
inline float ExpShiftedAndSum(float* x, int n, float shift) {
  int i = 0;
  float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 w = ExpNonPositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift));
    _mm256_storeu_ps(x + i, w);
    acc = _mm256_add_ps(acc, w);
  }
  sum = HorizontalSum(acc);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CPU_VEC_H_
