// RMSNorm, RoPE, SiLU*mul and Linear against their double-precision references.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"

namespace kvspan::kernels {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

void ExpectClose(const std::vector<float>& out, const std::vector<float>& ref, double atol,
                 double rtol) {
  ASSERT_EQ(out.size(), ref.size());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_LE(std::abs(static_cast<double>(out[i]) - ref[i]), atol + rtol * std::abs(ref[i]))
        << "element " << i << ": " << out[i] << " vs " << ref[i];
  }
}

TEST(RmsNormTest, FastMatchesReference) {
  for (int dim : {7, 64, 2048}) {
    const int rows = 5;
    const std::vector<float> x = RandomVector(rows * (dim + 3), dim, -4.0f, 4.0f);
    const std::vector<float> w = RandomVector(dim, dim + 1, 0.5f, 1.5f);
    std::vector<float> out(rows * dim), ref(rows * dim);
    RmsNormParams p;
    p.x = x.data();
    p.x_row_stride = dim + 3;
    p.weight = w.data();
    p.out_row_stride = dim;
    p.num_rows = rows;
    p.dim = dim;
    p.eps = 1e-5f;
    p.out = out.data();
    RmsNorm(p);
    p.out = ref.data();
    RmsNormRef(p);
    // fp32 sum of squares over <= 2048 terms: relative error well under 1e-5.
    ExpectClose(out, ref, 1e-6, 1e-5);
  }
}

TEST(SiluMulTest, FastMatchesReference) {
  const int rows = 3, dim = 100;
  const std::vector<float> in = RandomVector(rows * 2 * dim, 9, -10.0f, 10.0f);
  std::vector<float> out(rows * dim), ref(rows * dim);
  SiluMulParams p;
  p.gate = in.data();
  p.up = in.data() + dim;
  p.in_row_stride = 2 * dim;
  p.out_row_stride = dim;
  p.num_rows = rows;
  p.dim = dim;
  p.out = out.data();
  SiluMul(p);
  p.out = ref.data();
  SiluMulRef(p);
  ExpectClose(out, ref, 1e-6, 1e-5);
}

TEST(LinearTest, GemmAndGemvMatchReference) {
  for (int m : {1, 2, 37}) {
    for (bool with_bias : {false, true}) {
      for (float beta : {0.0f, 1.0f}) {
        const int n = 48, k = 130;
        const std::vector<float> x = RandomVector(m * k, m), w = RandomVector(n * k, m + 1),
                                 bias = RandomVector(n, 5);
        std::vector<float> out = RandomVector(m * n, 11), ref = out;
        LinearParams p;
        p.x = x.data();
        p.w = WeightMatrix::F32(w.data(), n, k);
        p.bias = with_bias ? bias.data() : nullptr;
        p.m = m;
        p.beta = beta;
        p.y = out.data();
        Linear(p);
        p.y = ref.data();
        LinearRef(p);
        // fp32 dot products of 130 terms of magnitude <= 1.
        ExpectClose(out, ref, 1e-5, 1e-5);
      }
    }
  }
}

RopeFrequencyOptions Llama32Rope() {
  RopeFrequencyOptions o;
  o.head_dim = 64;
  o.theta = 500000.0;
  o.llama3_scaling = true;
  o.factor = 32.0;
  o.low_freq_factor = 1.0;
  o.high_freq_factor = 4.0;
  o.original_max_position_embeddings = 8192;
  return o;
}

TEST(RopeTest, InvFreqMatchesReference) {
  RopeFrequencyOptions plain;
  plain.head_dim = 128;
  plain.theta = 10000.0;
  for (const RopeFrequencyOptions& o : {plain, Llama32Rope()}) {
    const std::vector<float> f = RopeInvFreq(o);
    const std::vector<double> ref = RopeInvFreqRef(o);
    ASSERT_EQ(f.size(), ref.size());
    // fp32 arithmetic as in transformers: a few ulp.
    for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], ref[i], 1e-6 * ref[i]) << i;
  }
}

TEST(RopeTest, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  RopeFrequencyOptions o = Llama32Rope();
  const std::vector<double> scaled = RopeInvFreqRef(o);
  o.llama3_scaling = false;
  const std::vector<double> base = RopeInvFreqRef(o);
  int num_high = 0, num_low = 0, num_medium = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * M_PI / base[i];
    if (wavelen < 8192 / 4.0) {
      EXPECT_EQ(scaled[i], base[i]);
      ++num_high;
    } else if (wavelen > 8192 / 1.0) {
      EXPECT_DOUBLE_EQ(scaled[i], base[i] / 32);
      ++num_low;
    } else {
      EXPECT_GT(scaled[i], base[i] / 32);
      EXPECT_LT(scaled[i], base[i]);
      ++num_medium;
    }
  }
  // Llama-3.2's geometry has frequencies in all three bands.
  EXPECT_GT(num_high, 0);
  EXPECT_GT(num_low, 0);
  EXPECT_GT(num_medium, 0);
}

TEST(RopeTest, FastMatchesReference) {
  for (const RopeFrequencyOptions& o : {RopeFrequencyOptions{.head_dim = 32, .theta = 10000.0},
                                        Llama32Rope()}) {
    const int num_tokens = 6, num_heads = 3, half = o.head_dim / 2;
    const int64_t stride = num_heads * o.head_dim + 5;
    const std::vector<int32_t> positions = {0, 1, 2, 17, 500, 1000};
    const std::vector<float> inv_freq = RopeInvFreq(o);
    const std::vector<double> inv_freq_ref = RopeInvFreqRef(o);
    std::vector<float> cos(num_tokens * half), sin(num_tokens * half);
    RopeCosSin(positions.data(), num_tokens, inv_freq.data(), half, cos.data(), sin.data());
    std::vector<float> x = RandomVector(num_tokens * stride, 3), ref = x;
    RopeParams p;
    p.x_row_stride = stride;
    p.cos = cos.data();
    p.sin = sin.data();
    p.num_tokens = num_tokens;
    p.num_heads = num_heads;
    p.head_dim = o.head_dim;
    p.x = x.data();
    ApplyRope(p);
    p.x = ref.data();
    ApplyRopeRef(p, positions.data(), inv_freq_ref.data());
    // The fp32 angle position * inv_freq carries a relative error of ~6e-8 (as in
    // PyTorch), i.e. up to ~1e-4 rad at position 1000: hence atol 2e-4.
    ExpectClose(x, ref, 2e-4, 0.0);
  }
}

TEST(RopeTest, PositionZeroIsIdentityAndRotationKeepsNorm) {
  const int half = 8;
  const RopeFrequencyOptions o{.head_dim = 2 * half, .theta = 10000.0};
  const std::vector<float> inv_freq = RopeInvFreq(o);
  const std::vector<int32_t> positions = {0, 123};
  std::vector<float> cos(2 * half), sin(2 * half);
  RopeCosSin(positions.data(), 2, inv_freq.data(), half, cos.data(), sin.data());
  const std::vector<float> original = RandomVector(4 * half, 8);
  std::vector<float> x = original;
  ApplyRope({.x = x.data(), .x_row_stride = 2 * half, .cos = cos.data(), .sin = sin.data(),
             .num_tokens = 2, .num_heads = 1, .head_dim = 2 * half});
  for (int i = 0; i < 2 * half; ++i) EXPECT_EQ(x[i], original[i]);
  for (int i = 0; i < half; ++i) {
    // Pair (i, i + half) of token 1 is rotated: its length is unchanged.
    const float* a = &original[2 * half];
    const float* b = &x[2 * half];
    EXPECT_NEAR(std::hypot(b[i], b[i + half]), std::hypot(a[i], a[i + half]), 1e-6);
  }
  EXPECT_NE(x[2 * half], original[2 * half]);
}

}  // namespace
}  // namespace kvspan::kernels
