// kernels::Linear over bf16 / fp16 / int8 / int4 weights, both ISAs, against LinearRef (the
// double-precision specification) on fresh random inputs of many shapes; the int8
// quantizer; the ISA choice.
//
// Tolerances, |y - ref| <= c · (Σ_l |x_l · ŵ_l| + |bias| + |beta · y0|), c per path:
//   fp32 products, fp32 sums (fp16/bf16 converted, any sgemm): c = (k + 2) · 2^-24, the
//     worst-case bound γ_{k+2} of k + 2 rounded additions in any order (FMA or not).
//   avx512-bf16dot bf16: x is rounded to bf16 first (relative error <= 2^-8 per element), so
//     c = 2^-8 + (k + 4) · 2^-24 against the exact reference; and against LinearRef of the
//     bf16-rounded x the plain fp32 bound (k + 2) · 2^-24 holds, which checks the pairing
//     of vdpbf16ps far more sharply.
//   amx bf16: x = hi + mid + lo exactly (three bf16), products exact in fp32; the hi products
//     summed in one fp32 accumulator (k additions), mid and lo in another (2k additions of
//     terms within 2^-8 (1 + 2^-8) of |x · ŵ|), then their sum, bias and beta: c = (k + k / 32
//     + 4) · 2^-24 covers (k + 3 + 2k · 2^-7 + k · 2^-8) · 2^-24.
//   int8: the integer dot product is exact; an int32 -> float conversion and three float
//     operations follow: c = 8 · 2^-24.
//   int4: each 32 codes of a row have an exact integer sum per lane, then one fp32 FMA per
//     32 codes into the lane's accumulator (avx512: 2 per 64-column block; avx2: the same
//     count) and a reduction over at most 8 lanes (3 additions) and the epilogue (3):
//     c = (2 · ceil(k / 64) + 8) · 2^-24 of Σ |s_x q · ŵ| (the quantized x, as for int8).
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/cpu_features.h"
#include "common/float16.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cpu/gemm_tiled.h"  // kPanelGemmMinRows
#include "kernels/cpu_isa.h"
#include "kernels/gemm.h"
#include "kernels/weight_matrix.h"

namespace kvspan::kernels {
namespace {

constexpr double kU = 5.9604644775390625e-8;  // 2^-24, fp32 unit roundoff

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A random [n, k] weight matrix in `format`, owning its storage.
struct TestWeights {
  TestWeights(WeightFormat format, int n, int k, std::mt19937& rng, int group_size = 32)
      : owned(format, RandomVector(int64_t{n} * k, rng).data(), n, k, group_size), matrix(owned.view()) {}
  OwnedWeightMatrix owned;
  const WeightMatrix& matrix;
};

// Σ_l |x_l · ŵ_l| per output element (for int8: of the quantized x and codes, scaled),
// plus |bias| and |beta · y0|: the scale of every error bound above.
std::vector<double> AbsScale(const LinearParams& p, const std::vector<float>& y0) {
  const int n = p.w.rows, k = p.w.cols;
  std::vector<double> out(int64_t{p.m} * n);
  std::vector<float> w(k), xq(k);
  std::vector<int8_t> q(k);
  for (int i = 0; i < p.m; ++i) {
    const float* x = p.x + int64_t{i} * k;
    if (p.w.format == WeightFormat::kInt8 || p.w.format == WeightFormat::kInt4) {
      const float s = QuantizeRowInt8(x, k, q.data());
      for (int l = 0; l < k; ++l) xq[l] = s * q[l];
      x = xq.data();
    }
    for (int j = 0; j < n; ++j) {
      DequantizeRow(p.w, j, w.data());
      double sum = 0;
      for (int l = 0; l < k; ++l) sum += std::abs(static_cast<double>(x[l]) * w[l]);
      if (p.bias != nullptr) sum += std::abs(p.bias[j]);
      sum += std::abs(static_cast<double>(p.beta) * y0[int64_t{i} * n + j]);
      out[int64_t{i} * n + j] = sum;
    }
  }
  return out;
}

void ExpectWithin(const std::vector<float>& y, const std::vector<float>& ref, const std::vector<double>& scale,
                  double c, const std::string& what) {
  for (size_t e = 0; e < y.size(); ++e) {
    ASSERT_LE(std::abs(static_cast<double>(y[e]) - ref[e]), c * scale[e] + 1e-30)
        << what << " element " << e << ": " << y[e] << " vs " << ref[e] << ", scale " << scale[e];
  }
}

using Case = std::tuple<CpuIsa, WeightFormat>;

class LinearFormatTest : public ::testing::TestWithParam<Case> {};

TEST_P(LinearFormatTest, MatchesReferenceOverShapes) {
  const auto [isa, format] = GetParam();
  if (!CpuSupportsIsa(DetectCpuFeatures(), isa)) GTEST_SKIP() << "CPU lacks " << CpuIsaName(isa);
  std::mt19937 rng(1234 + static_cast<int>(format) * 10 + static_cast<int>(isa));
  ThreadPool pool(3);
  const std::vector<std::pair<int, int>> shapes = {{1, 1},   {3, 31},   {5, 32},   {4, 64},
                                                   {17, 33}, {67, 257}, {130, 1000}, {129, 95}};
  const std::vector<int> ms = {1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 33, 70, 140};
  for (size_t shape = 0; shape < shapes.size(); ++shape) {
    const auto [n, k] = shapes[shape];
    const int group_size = 32 * (1 + static_cast<int>(shape % 4));  // int4: 32, 64, 96, 128
    const TestWeights w(format, n, k, rng, group_size);
    for (int m : ms) {
      for (int variant = 0; variant < 2; ++variant) {  // plain; bias + beta = 1 + pool
        const std::vector<float> x = RandomVector(int64_t{m} * k, rng);
        const std::vector<float> bias = RandomVector(n, rng);
        const std::vector<float> y0 = RandomVector(int64_t{m} * n, rng);
        LinearParams p;
        p.x = x.data();
        p.w = w.matrix;
        p.m = m;
        if (variant == 1) {
          p.bias = bias.data();
          p.beta = 1.0f;
          p.pool = &pool;
        }
        std::vector<float> y = y0, ref = y0;
        p.y = y.data();
        Linear(p, isa);
        p.y = ref.data();
        LinearRef(p);
        const std::vector<double> scale = AbsScale(p, y0);
        const std::string what = "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" +
                                 std::to_string(k) + " variant " + std::to_string(variant);
        if (format == WeightFormat::kInt8) {
          ExpectWithin(y, ref, scale, 8 * kU, what);
        } else if (format == WeightFormat::kInt4) {
          ExpectWithin(y, ref, scale, (2 * ((k + 63) / 64) + 8) * kU, what + " group " + std::to_string(group_size));
        } else if (format == WeightFormat::kBF16 && isa == CpuIsa::kAvx512Bf16Dot) {
          ExpectWithin(y, ref, scale, 1.0 / 256 + (k + 4) * kU, what + " (exact x)");
          std::vector<float> x_bf16(x.size());
          for (size_t e = 0; e < x.size(); ++e) x_bf16[e] = Bf16ToFloat(FloatToBf16(x[e]));
          std::vector<float> ref_bf16 = y0;
          p.x = x_bf16.data();
          p.y = ref_bf16.data();
          LinearRef(p);
          ExpectWithin(y, ref_bf16, AbsScale(p, y0), (k + 2) * kU, what + " (x rounded to bf16)");
        } else if (format == WeightFormat::kBF16 && isa == CpuIsa::kAmx) {
          ExpectWithin(y, ref, scale, (k + k / 32.0 + 4) * kU, what);
        } else {
          ExpectWithin(y, ref, scale, (k + 2) * kU, what);
        }
      }
    }
  }
}

// Below how many rows in a call a row of x gets the same bits from Linear whatever the rows
// stacked with it (the serving node's greedy outputs must not depend on the batch:
// ServeTest's OutputDoesNotDependOnTheBatch); 0: not even there.
// - Every m: every format on avx2, int8 on every ISA (exact integer sums, one epilogue:
//   amx's tdpbssd included) and fp16 (one tile at every m).
// - Below kPanelGemmMinRows: int4 on avx512 / amx (one tile arithmetic per x row from 1 to 31
//   rows; the panel GEMM from 32 reduces each 32 codes in one lane).
// - Not at all: fp32 (OpenBLAS's sgemv and sgemm round differently) and avx512 / amx bf16
//   (the m = 1 rows tile, the m >= 32 panel GEMM and amx's three-part split sum in other orders
//   than the 4-row tile).
// Measured on an AVX-512 + AMX CPU (Intel Xeon, 2026-12-03) and on Zen 4 (2026-12-03, int4's
// bound): these pass, the excluded ones fail.
int BatchInvariantBelow(CpuIsa isa, WeightFormat format) {
  constexpr int kEvery = 1 << 30;
  if (format == WeightFormat::kF32) return 0;
  if (isa == CpuIsa::kAvx2 || format == WeightFormat::kInt8 || format == WeightFormat::kF16) return kEvery;
  return format == WeightFormat::kInt4 ? internal::kPanelGemmMinRows : 0;
}

TEST_P(LinearFormatTest, RowsDoNotDependOnTheBatch) {
  const auto [isa, format] = GetParam();
  if (!CpuSupportsIsa(DetectCpuFeatures(), isa)) GTEST_SKIP() << "CPU lacks " << CpuIsaName(isa);
  const int below = BatchInvariantBelow(isa, format);
  if (below == 0) GTEST_SKIP() << "not batch-invariant (BatchInvariantBelow)";
  std::mt19937 rng(4321 + static_cast<int>(format) * 10 + static_cast<int>(isa));
  ThreadPool pool(3);
  constexpr int kRows = 140;  // past the AVX2 bf16 / fp16 GEMM's 128 rows per pass
  for (const auto& [n, k] : std::vector<std::pair<int, int>>{{67, 257}, {130, 1000}, {9, 2048}}) {
    const TestWeights w(format, n, k, rng);
    const std::vector<float> x = RandomVector(int64_t{kRows} * k, rng);
    const std::vector<float> bias = RandomVector(n, rng);
    const std::vector<float> y0 = RandomVector(int64_t{kRows} * n, rng);  // beta = 1 adds it
    LinearParams p;
    p.x = x.data();
    p.w = w.matrix;
    p.bias = bias.data();
    p.beta = 1.0f;
    p.pool = &pool;
    // The reference: all rows in one call where that is within the bound, else each alone.
    std::vector<float> all = y0;
    if (kRows < below) {
      p.m = kRows;
      p.y = all.data();
      Linear(p, isa);
    } else {
      for (int row = 0; row < kRows; ++row) {
        p.x = x.data() + int64_t{row} * k;
        p.m = 1;
        p.y = all.data() + int64_t{row} * n;
        Linear(p, isa);
      }
    }
    // Batches of every size from 1 to 40 rows, starting at every row that leaves room.
    for (int m = 1; m <= 40 && m < below; m += (m < 8 ? 1 : 7)) {
      for (int first = 0; first + m <= kRows; first += 13) {
        std::vector<float> y(y0.begin() + int64_t{first} * n, y0.begin() + int64_t{first + m} * n);
        p.x = x.data() + int64_t{first} * k;
        p.m = m;
        p.y = y.data();
        Linear(p, isa);
        for (int64_t e = 0; e < int64_t{m} * n; ++e) {
          ASSERT_EQ(y[e], all[int64_t{first} * n + e]) << "n=" << n << " k=" << k << " m=" << m << " first row " << first
                                                       << " element " << e;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    IsasAndFormats, LinearFormatTest,
    ::testing::Combine(::testing::Values(CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16Dot, CpuIsa::kAmx),
                       ::testing::Values(WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kF16,
                                         WeightFormat::kInt8, WeightFormat::kInt4)),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string isa(CpuIsaName(std::get<0>(info.param)));
      for (char& ch : isa) {
        if (ch == '-') ch = '_';
      }
      return isa + "_" +
             std::string(WeightFormatName(std::get<1>(info.param)));
    });

// amx's int8 GEMM does the avx512 panel GEMM's arithmetic (exact integer sums, then the same
// fp32 operations), so it gives its bits at every m >= 32.
TEST(LinearAmxTest, Int8GivesTheAvx512Bits) {
  if (!CpuSupportsIsa(DetectCpuFeatures(), CpuIsa::kAmx)) GTEST_SKIP() << "CPU lacks amx";
  std::mt19937 rng(77);
  ThreadPool pool(2);
  for (WeightFormat format : {WeightFormat::kInt8}) {
    for (const auto& [n, k, group] : std::vector<std::tuple<int, int, int>>{{67, 257, 32}, {130, 1000, 64}, {300, 2048, 128}}) {
      const TestWeights w(format, n, k, rng, group);
      for (int m : {32, 33, 70, 140}) {
        const std::vector<float> x = RandomVector(int64_t{m} * k, rng);
        const std::vector<float> bias = RandomVector(n, rng);
        std::vector<float> amx = RandomVector(int64_t{m} * n, rng), avx512 = amx;
        LinearParams p{.x = x.data(), .w = w.matrix, .bias = bias.data(), .m = m, .beta = 1.0f, .pool = &pool};
        p.y = amx.data();
        Linear(p, CpuIsa::kAmx);
        p.y = avx512.data();
        Linear(p, CpuIsa::kAvx512);
        for (size_t e = 0; e < amx.size(); ++e) {
          ASSERT_EQ(amx[e], avx512[e]) << WeightFormatName(format) << " n=" << n << " k=" << k << " m=" << m << " element " << e;
        }
      }
    }
  }
}

// The int8 path approximates the product of fp32 x with the dequantized weights within
// the activation quantization error: |Σ (x - s_x q) ŵ| <= (s_x / 2) Σ |ŵ| (plus fp32 terms).
TEST(LinearInt8Test, WithinActivationQuantizationBoundOfFloatProduct) {
  std::mt19937 rng(99);
  const int n = 37, k = 300, m = 3;
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
  const TestWeights w(format, n, k, rng);
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (!CpuSupportsIsa(DetectCpuFeatures(), isa)) continue;
    const std::vector<float> x = RandomVector(m * k, rng, -3.0f, 3.0f);
    std::vector<float> y(m * n);
    Linear({.x = x.data(), .w = w.matrix, .y = y.data(), .m = m}, isa);
    std::vector<float> wrow(k);
    std::vector<int8_t> q(k);
    for (int i = 0; i < m; ++i) {
      const float s_x = QuantizeRowInt8(x.data() + i * k, k, q.data());
      for (int j = 0; j < n; ++j) {
        DequantizeRow(w.matrix, j, wrow.data());
        double exact = 0, abs_w = 0, abs_xw = 0;
        for (int l = 0; l < k; ++l) {
          exact += static_cast<double>(x[i * k + l]) * wrow[l];
          abs_w += std::abs(wrow[l]);
          abs_xw += std::abs(static_cast<double>(x[i * k + l]) * wrow[l]);
        }
        EXPECT_LE(std::abs(y[i * n + j] - exact), s_x / 2 * abs_w + (k + 8) * kU * abs_xw)
            << WeightFormatName(format) << " " << CpuIsaName(isa) << " i=" << i << " j=" << j;
      }
    }
  }
  }
}

TEST(QuantizeRowInt8Test, RoundsHalfEvenWithinHalfAStep) {
  std::mt19937 rng(5);
  for (int k : {1, 7, 8, 33, 100}) {
    std::vector<float> x = RandomVector(k, rng, -2.0f, 2.0f);
    x[k / 2] = -2.5f;  // the largest magnitude: code -127
    std::vector<int8_t> q(k);
    const float s = QuantizeRowInt8(x.data(), k, q.data());
    EXPECT_FLOAT_EQ(s, 2.5f / 127.0f);
    EXPECT_EQ(q[k / 2], -127);
    const float inv = 127.0f / 2.5f;
    for (int c = 0; c < k; ++c) {
      // The vector and scalar parts of the quantizer compute the same fp32 formula.
      EXPECT_EQ(q[c], static_cast<int8_t>(std::nearbyint(x[c] * inv))) << "k=" << k << " c=" << c;
      EXPECT_LE(std::abs(x[c] - s * q[c]), s * 0.5f * (1 + 1e-5f)) << "k=" << k << " c=" << c;
    }
  }
  std::vector<float> zeros(20, 0.0f);
  std::vector<int8_t> q(20, 1);
  EXPECT_EQ(QuantizeRowInt8(zeros.data(), 20, q.data()), 0.0f);
  for (int8_t v : q) EXPECT_EQ(v, 0);
}

TEST(QuantizeRowsInt8Test, RowSumsAndDequantizedValues) {
  std::mt19937 rng(6);
  const int rows = 5, cols = 41;
  const std::vector<float> w = RandomVector(rows * cols, rng);
  std::vector<int8_t> codes(rows * cols);
  std::vector<float> scales(rows);
  std::vector<int32_t> sums(rows);
  QuantizeRowsInt8(w.data(), 0, rows, cols, codes.data(), scales.data(), sums.data());
  const WeightMatrix m{WeightFormat::kInt8, codes.data(), scales.data(), sums.data(), rows, cols};
  EXPECT_EQ(m.size_bytes(), rows * cols + rows * 8);
  std::vector<float> row(cols);
  for (int r = 0; r < rows; ++r) {
    int32_t sum = 0;
    for (int c = 0; c < cols; ++c) sum += codes[r * cols + c];
    EXPECT_EQ(sums[r], sum);
    DequantizeRow(m, r, row.data());
    for (int c = 0; c < cols; ++c) EXPECT_LE(std::abs(row[c] - w[r * cols + c]), scales[r] * 0.5f * (1 + 1e-5f));
  }
}

TEST(QuantizeRowsInt4Test, LayoutScalesAndDequantizedValues) {
  std::mt19937 rng(7);
  for (const auto& [rows, cols, group] :
       std::vector<std::tuple<int, int, int>>{{3, 64, 32}, {5, 100, 32}, {8, 130, 64}, {6, 200, 96}, {3, 7, 32}, {37, 130, 32}}) {
    std::vector<float> w = RandomVector(rows * cols, rng, -0.5f, 0.5f);
    w[0] = 0.7f;  // row 0, group 0: the largest magnitude, code 7
    for (int c = 0; c < std::min(cols, group); ++c) w[cols + c] = 0.0f;  // row 1, group 0: all zero
    const int64_t row_bytes = WeightRowBytes(WeightFormat::kInt4, cols);
    EXPECT_EQ(row_bytes, (cols + 63) / 64 * 32);
    const int panels = (rows + 15) / 16, blocks = (cols + 63) / 64;
    EXPECT_EQ(WeightDataBytes(WeightFormat::kInt4, rows, cols), panels * 16 * row_bytes);
    const int groups = (cols + group - 1) / group;
    std::vector<uint8_t> packed(WeightDataBytes(WeightFormat::kInt4, rows, cols), 0);
    std::vector<uint16_t> scales(panels * 16 * groups, 0);
    // Two calls that split a panel (rows [0, 2) and [2, rows)) write what one call would.
    QuantizeRowsInt4(w.data(), 2, cols, group, 0, packed.data(), scales.data());
    QuantizeRowsInt4(w.data() + 2 * cols, rows - 2, cols, group, 2, packed.data(), scales.data());
    std::vector<uint8_t> packed_once(packed.size(), 0);
    std::vector<uint16_t> scales_once(scales.size(), 0);
    QuantizeRowsInt4(w.data(), rows, cols, group, 0, packed_once.data(), scales_once.data());
    EXPECT_EQ(packed, packed_once);
    EXPECT_EQ(scales, scales_once);
    WeightMatrix m{WeightFormat::kInt4, packed.data(), nullptr, nullptr, rows, cols, scales.data(), group};
    EXPECT_EQ(m.num_groups(), groups);
    EXPECT_EQ(m.size_bytes(), panels * 16 * (row_bytes + groups * 2));
    // The layout of weight_matrix.h, written out: row r's scale of group g at
    // ((r / 16) * groups + g) * 16 + r % 16; element c in byte ((r / 16) * 8 blocks + c / 8) *
    // 64 + (r % 16) * 4 + c % 4, the low nibble for c % 8 < 4, holding code + 8.
    auto scale_of = [&](int r, int g) { return scales[((r / 16) * groups + g) * 16 + r % 16]; };
    auto code_of = [&](int r, int c) {
      const uint8_t byte = packed[((r / 16) * 8 * blocks + c / 8) * 64 + (r % 16) * 4 + c % 4];
      return ((c % 8) < 4 ? byte & 0x0f : byte >> 4) - 8;
    };
    EXPECT_EQ(HalfToFloat(scale_of(0, 0)), HalfToFloat(FloatToHalf(0.7f / 7)));
    EXPECT_EQ(code_of(0, 0), 7);
    EXPECT_EQ(scale_of(1, 0), 0);  // the all-zero group
    std::vector<float> row(cols);
    for (int r = 0; r < rows; ++r) {
      // Padding past cols is code 0.
      for (int c = cols; c < blocks * 64; ++c) EXPECT_EQ(code_of(r, c), 0) << "padding r=" << r << " c=" << c;
      DequantizeRow(m, r, row.data());
      for (int c = 0; c < cols; ++c) {
        const float s = HalfToFloat(scale_of(r, c / group));
        const int code = code_of(r, c);
        ASSERT_EQ(Int4Code(m, r, c), code) << "r=" << r << " c=" << c;
        ASSERT_GE(code, -7);
        ASSERT_LE(code, 7);
        EXPECT_EQ(row[c], s * code);
        const int expected = s == 0.0f ? 0 : static_cast<int>(std::clamp(std::nearbyint(w[r * cols + c] / s), -7.0f, 7.0f));
        EXPECT_EQ(code, expected)
            << "r=" << r << " c=" << c;
        // Half a step, plus the step lost when the fp16 scale rounded down (max|w| clamps to 7 s).
        EXPECT_LE(std::abs(row[c] - w[r * cols + c]), s * 0.5f + 7 * s * 1e-3f) << "r=" << r << " c=" << c;
      }
    }
  }
}

TEST(CpuIsaTest, ChoiceFollowsFeaturesAndEnvironment) {
  CpuFeatures avx2_only;
  avx2_only.avx2 = avx2_only.fma = avx2_only.f16c = true;
  CpuFeatures avx512 = avx2_only;
  avx512.avx512f = avx512.avx512bw = avx512.avx512vl = avx512.avx512_bf16 = avx512.avx512_vnni = true;
  CpuFeatures skylake = avx512;
  skylake.avx512_bf16 = false;  // AVX-512 without BF16: the avx2 kernels
  CpuFeatures amx = avx512;
  amx.amx_tile = amx.amx_bf16 = amx.amx_int8 = true;
  CpuFeatures amx_refused = amx;
  amx_refused.amx_tile = false;  // what DetectCpuFeatures reports when Linux refuses the tiles

  EXPECT_EQ(ChooseCpuIsa(avx512, nullptr).isa, CpuIsa::kAvx512);
  EXPECT_EQ(ChooseCpuIsa(avx512, "auto").isa, CpuIsa::kAvx512);
  EXPECT_EQ(ChooseCpuIsa(avx2_only, nullptr).isa, CpuIsa::kAvx2);
  EXPECT_EQ(ChooseCpuIsa(skylake, nullptr).isa, CpuIsa::kAvx2);
  EXPECT_EQ(ChooseCpuIsa(avx512, "avx2").isa, CpuIsa::kAvx2);
  EXPECT_EQ(ChooseCpuIsa(avx512, "avx2").reason, "KVSPAN_CPU_ISA=avx2");
  EXPECT_EQ(ChooseCpuIsa(avx512, "avx512").isa, CpuIsa::kAvx512);
  EXPECT_EQ(ChooseCpuIsa(avx512, "avx512-bf16dot").isa, CpuIsa::kAvx512Bf16Dot);
  EXPECT_EQ(ChooseCpuIsa(avx2_only, "avx512-bf16dot").isa, CpuIsa::kAvx2);
  const CpuIsaChoice refused = ChooseCpuIsa(avx2_only, "avx512");
  EXPECT_EQ(refused.isa, CpuIsa::kAvx2);
  EXPECT_NE(refused.reason.find("lacks"), std::string::npos) << refused.reason;
  const CpuIsaChoice unknown = ChooseCpuIsa(avx512, "sse9");
  EXPECT_EQ(unknown.isa, CpuIsa::kAvx512);
  EXPECT_NE(unknown.reason.find("unknown KVSPAN_CPU_ISA=sse9"), std::string::npos) << unknown.reason;
  EXPECT_TRUE(CpuSupportsIsa(avx2_only, CpuIsa::kAvx2));
  EXPECT_FALSE(CpuSupportsIsa(skylake, CpuIsa::kAvx512));

  EXPECT_EQ(ChooseCpuIsa(amx, nullptr).isa, CpuIsa::kAmx);
  EXPECT_EQ(ChooseCpuIsa(amx, "amx").isa, CpuIsa::kAmx);
  EXPECT_EQ(ChooseCpuIsa(amx, "avx512").isa, CpuIsa::kAvx512);  // AVX-512 without AMX
  EXPECT_EQ(ChooseCpuIsa(amx, "avx2").isa, CpuIsa::kAvx2);
  EXPECT_EQ(ChooseCpuIsa(amx_refused, nullptr).isa, CpuIsa::kAvx512);
  const CpuIsaChoice no_amx = ChooseCpuIsa(amx_refused, "amx");
  EXPECT_EQ(no_amx.isa, CpuIsa::kAvx512);
  EXPECT_NE(no_amx.reason.find("lacks amx"), std::string::npos) << no_amx.reason;
  EXPECT_EQ(ChooseCpuIsa(avx2_only, "amx").isa, CpuIsa::kAvx2);
  EXPECT_FALSE(CpuSupportsIsa(avx512, CpuIsa::kAmx));
  EXPECT_TRUE(CpuSupportsIsa(amx, CpuIsa::kAmx));
}

}  // namespace
}  // namespace kvspan::kernels
