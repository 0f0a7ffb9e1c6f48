// Test-only: the checks of elementwise_cuda.h's ops against their CPU contracts, written
// once over an ElementwiseRunner that runs an op on host vectors. The GPU test's runner
// copies them to the device and back; the emulated test's runs the kernels in the CPU
// emulator on the host vectors themselves.
#ifndef KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_TEST_CASES_H_
#define KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_TEST_CASES_H_

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/cuda/elementwise_cuda.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"

namespace kvspan::kernels::internal {

// Each method runs one op with the shape fields of `shape` (its pointers are ignored) on
// the given inputs and returns the output buffer (x in place for Rope).
class ElementwiseRunner {
 public:
  virtual ~ElementwiseRunner() = default;
  virtual std::vector<float> RmsNorm(RmsNormParams shape, const std::vector<float>& x,
                                     const std::vector<float>& weight) = 0;
  virtual std::vector<float> SiluMul(SiluMulParams shape, const std::vector<float>& gate,
                                     const std::vector<float>& up) = 0;
  virtual std::vector<float> Rope(RopeCudaParams shape, const std::vector<float>& x,
                                  const std::vector<int32_t>& positions, const std::vector<float>& inv_freq) = 0;
  virtual std::vector<float> Embedding(EmbeddingCudaParams shape, const std::vector<uint16_t>& table,
                                       const std::vector<int32_t>& ids) = 0;
  virtual std::vector<int32_t> Argmax(ArgmaxCudaParams shape, const std::vector<float>& logits) = 0;
};

inline std::vector<float> RandomFloats(size_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(n);
  for (float& f : x) f = normal(rng);
  return x;
}

// fp32 with a block-wide sum (strided partials of <= dim / 256 terms, then 8 + 5 levels):
// far inside 1e-5 relative; a wrong eps, mean or weight is far outside.
inline void CheckRmsNorm(ElementwiseRunner& runner) {
  std::mt19937 rng(11);
  for (int dim : {1, 31, 256, 2048, 3000}) {
    for (int rows : {1, 3, 7}) {
      RmsNormParams p;
      p.num_rows = rows;
      p.dim = dim;
      p.x_row_stride = dim + 5;
      p.out_row_stride = dim + 2;
      p.eps = 1e-5f;
      const std::vector<float> x = RandomFloats(rows * p.x_row_stride, 2.0f, rng);
      const std::vector<float> w = RandomFloats(dim, 1.0f, rng);
      std::vector<float> ref(rows * p.out_row_stride, 0.0f);
      RmsNormParams r = p;
      r.x = x.data();
      r.weight = w.data();
      r.out = ref.data();
      RmsNormRef(r);
      const std::vector<float> got = runner.RmsNorm(p, x, w);
      ASSERT_EQ(got.size(), ref.size());
      for (int row = 0; row < rows; ++row) {
        for (int i = 0; i < dim; ++i) {
          const float want = ref[row * p.out_row_stride + i];
          ASSERT_NEAR(got[row * p.out_row_stride + i], want, 1e-6f + 1e-5f * std::fabs(want))
              << "dim " << dim << " row " << row << " i " << i;
        }
      }
    }
  }
}

// expf within 2 ulp and one division: 1e-6 relative.
inline void CheckSiluMul(ElementwiseRunner& runner) {
  std::mt19937 rng(12);
  SiluMulParams p;
  p.num_rows = 5;
  p.dim = 1000;
  p.in_row_stride = 1003;
  p.out_row_stride = 1001;
  const std::vector<float> gate = RandomFloats(p.num_rows * p.in_row_stride, 4.0f, rng);
  const std::vector<float> up = RandomFloats(gate.size(), 1.0f, rng);
  std::vector<float> ref(p.num_rows * p.out_row_stride, 0.0f);
  SiluMulParams r = p;
  r.gate = gate.data();
  r.up = up.data();
  r.out = ref.data();
  SiluMulRef(r);
  const std::vector<float> got = runner.SiluMul(p, gate, up);
  ASSERT_EQ(got.size(), ref.size());
  for (int row = 0; row < p.num_rows; ++row) {
    for (int i = 0; i < p.dim; ++i) {
      const float want = ref[row * p.out_row_stride + i];
      ASSERT_NEAR(got[row * p.out_row_stride + i], want, 1e-7f + 1e-6f * std::fabs(want)) << row << " " << i;
    }
  }
}

// Against the CPU's fp32 RopeCosSin + ApplyRope on the same fp32 angles: only cos/sin's
// last bits may differ (CUDA's cosf/sinf are within 2 ulp over the full range).
inline void CheckRope(ElementwiseRunner& runner) {
  std::mt19937 rng(13);
  RopeFrequencyOptions o;
  o.head_dim = 64;
  o.theta = 500000.0;
  o.llama3_scaling = true;
  o.factor = 32.0;
  const std::vector<float> inv_freq = RopeInvFreq(o);
  RopeCudaParams p;
  p.num_tokens = 6;
  p.num_heads = 3;
  p.head_dim = o.head_dim;
  p.x_row_stride = p.num_heads * p.head_dim + 7;
  const std::vector<int32_t> positions = {0, 1, 17, 4095, 8191, 131071};
  const std::vector<float> x = RandomFloats(p.num_tokens * p.x_row_stride, 1.0f, rng);
  const int half = p.head_dim / 2;
  std::vector<float> cos(p.num_tokens * half), sin(cos.size());
  RopeCosSin(positions.data(), p.num_tokens, inv_freq.data(), half, cos.data(), sin.data());
  std::vector<float> ref = x;
  RopeParams r;
  r.x = ref.data();
  r.x_row_stride = p.x_row_stride;
  r.cos = cos.data();
  r.sin = sin.data();
  r.num_tokens = p.num_tokens;
  r.num_heads = p.num_heads;
  r.head_dim = p.head_dim;
  ApplyRope(r);
  const std::vector<float> got = runner.Rope(p, x, positions, inv_freq);
  ASSERT_EQ(got.size(), ref.size());
  for (int t = 0; t < p.num_tokens; ++t) {
    for (int j = 0; j < p.x_row_stride; ++j) {
      const int64_t k = t * p.x_row_stride + j;
      if (j >= p.num_heads * p.head_dim) {
        ASSERT_EQ(got[k], x[k]) << "padding past the heads must stay untouched";
        continue;
      }
      const int h = j / p.head_dim, i = j % p.head_dim % half;
      const float a = std::fabs(x[t * p.x_row_stride + h * p.head_dim + i]);
      const float b = std::fabs(x[t * p.x_row_stride + h * p.head_dim + i + half]);
      ASSERT_NEAR(got[k], ref[k], 1e-6f * (a + b) + 1e-7f) << "token " << t << " j " << j;
    }
  }
}

inline void CheckEmbedding(ElementwiseRunner& runner) {
  std::mt19937 rng(14);
  EmbeddingCudaParams p;
  p.vocab = 300;
  p.dim = 520;
  p.num_tokens = 9;
  p.out_row_stride = 530;
  std::vector<uint16_t> table(p.vocab * p.dim);
  const std::vector<float> values = RandomFloats(table.size(), 1.0f, rng);
  for (size_t i = 0; i < table.size(); ++i) table[i] = FloatToBf16(values[i]);
  const std::vector<int32_t> ids = {0, 299, 5, 5, 17, 150, 298, 1, 0};
  const std::vector<float> got = runner.Embedding(p, table, ids);
  ASSERT_EQ(got.size(), size_t(p.num_tokens * p.out_row_stride));
  for (int t = 0; t < p.num_tokens; ++t) {
    for (int i = 0; i < p.dim; ++i) {
      ASSERT_EQ(got[t * p.out_row_stride + i], Bf16ToFloat(table[ids[t] * p.dim + i])) << t << " " << i;
    }
  }
}

// model::ArgMax's rule, written out: the largest finite value, lowest index on ties, 0 if
// no value is finite.
inline int32_t ArgMaxSpec(const float* row, int n) {
  int32_t best = -1;
  for (int i = 0; i < n; ++i) {
    if (std::isfinite(row[i]) && (best < 0 || row[i] > row[best])) best = i;
  }
  return best < 0 ? 0 : best;
}

inline void CheckArgmax(ElementwiseRunner& runner) {
  std::mt19937 rng(15);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int vocab : {1, 5, 1000, 128256}) {
    ArgmaxCudaParams p;
    p.num_rows = 6;
    p.vocab = vocab;
    p.row_stride = vocab + 3;
    std::vector<float> logits = RandomFloats(p.num_rows * p.row_stride, 3.0f, rng);
    std::uniform_int_distribution<int> id(0, vocab - 1);
    // Row 1: a tie of the maximum at two ids (the lower must win); row 2: +inf and NaN
    // above every finite value (they do not count); row 3: nothing finite (0); row 4: a
    // tie between ids that different threads and warps scan.
    const int a = id(rng), b = id(rng);
    logits[1 * p.row_stride + a] = 100.0f;
    logits[1 * p.row_stride + b] = 100.0f;
    logits[2 * p.row_stride + id(rng)] = inf;
    logits[2 * p.row_stride + id(rng)] = nan;
    for (int i = 0; i < vocab; ++i) logits[3 * p.row_stride + i] = (i % 2) ? -inf : nan;
    logits[4 * p.row_stride + vocab - 1] = 50.0f;
    logits[4 * p.row_stride + vocab / 2] = 50.0f;
    const std::vector<int32_t> got = runner.Argmax(p, logits);
    ASSERT_EQ(got.size(), size_t(p.num_rows));
    for (int r = 0; r < p.num_rows; ++r) {
      EXPECT_EQ(got[r], ArgMaxSpec(logits.data() + r * p.row_stride, vocab)) << "vocab " << vocab << " row " << r;
    }
  }
}

}  // namespace kvspan::kernels::internal

#endif  // KVSPAN_KERNELS_CUDA_INTERNAL_ELEMENTWISE_TEST_CASES_H_
