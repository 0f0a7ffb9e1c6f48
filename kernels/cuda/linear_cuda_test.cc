// linear_cuda.h against LinearRef (kernels/gemm.h) with the stated bounds: built twice, on
// the GPU (kernels_cuda_test; skips without a device) and in the CPU emulator
// (kernels_cuda_emulated_test, plain kernel only: cuBLASLt is Unimplemented there).
#include "kernels/cuda/linear_cuda.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/float16.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/gemm.h"
#include "kernels/weight_matrix.h"

namespace kvspan::kernels {
namespace {

using ::kvspan::testing::StatusIs;

struct Shape {
  int m, n, k;
};

enum class Path { kPlain, kCublasLt };

// Runs every shape with bias on/off and beta 0/1 through `path` and checks each element
// against LinearRef on the same bf16 weights: |y - ref| <= c · (Σ|x·w| + |bias| + |beta·y0|)
// with c = (k + 2) · 2^-24 for the plain kernel (exact products, fp32 sums) and
// c = 2^-8 + (k + 4) · 2^-24 for cuBLASLt (x rounded to bf16 first).
void CheckPath(Path path) {
  std::unique_ptr<CublasLtLinear> lt;
  if (path == Path::kCublasLt) {
    auto created = CublasLtLinear::Create();
    ASSERT_OK(created.status());
    lt = std::move(*created);
  }
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Shape& s : {Shape{1, 1, 1}, Shape{1, 300, 17}, Shape{3, 7, 256}, Shape{8, 300, 1000}, Shape{9, 257, 64},
                         Shape{33, 40, 130}}) {
    for (int variant = 0; variant < 4; ++variant) {
      const bool with_bias = variant & 1;
      const float beta = (variant & 2) ? 1.0f : 0.0f;
      const int64_t xs = s.k + 3, ys = s.n + 2;
      std::vector<float> x(s.m * xs), w32(int64_t{s.n} * s.k), bias(s.n), y0(s.m * ys);
      for (float& f : x) f = normal(rng);
      for (float& f : w32) f = Bf16ToFloat(FloatToBf16(0.1f * normal(rng)));  // exactly bf16
      for (float& f : bias) f = normal(rng);
      for (float& f : y0) f = normal(rng);
      std::vector<uint16_t> w16(w32.size());
      for (size_t i = 0; i < w32.size(); ++i) w16[i] = FloatToBf16(w32[i]);

      // Reference on contiguous rows.
      std::vector<float> xc(int64_t{s.m} * s.k), ref(int64_t{s.m} * s.n);
      for (int r = 0; r < s.m; ++r) {
        for (int c = 0; c < s.k; ++c) xc[r * s.k + c] = x[r * xs + c];
        for (int j = 0; j < s.n; ++j) ref[r * s.n + j] = y0[r * ys + j];
      }
      LinearParams rp;
      rp.x = xc.data();
      rp.w = WeightMatrix{WeightFormat::kBF16, w16.data(), nullptr, nullptr, s.n, s.k};
      rp.bias = with_bias ? bias.data() : nullptr;
      rp.y = ref.data();
      rp.m = s.m;
      rp.beta = beta;
      LinearRef(rp);

      DeviceBuffer dx, dw, db, dy;
      ASSERT_OK(dx.Assign(x.data(), x.size() * 4));
      ASSERT_OK(dw.Assign(w16.data(), w16.size() * 2));
      ASSERT_OK(db.Assign(bias.data(), bias.size() * 4));
      ASSERT_OK(dy.Assign(y0.data(), y0.size() * 4));
      LinearCudaParams p;
      p.x = dx.as<float>();
      p.x_row_stride = xs;
      p.w = dw.as<uint16_t>();
      p.bias = with_bias ? db.as<float>() : nullptr;
      p.y = dy.as<float>();
      p.y_row_stride = ys;
      p.m = s.m;
      p.n = s.n;
      p.k = s.k;
      p.beta = beta;
      ASSERT_OK(path == Path::kPlain ? LinearCuda(p, nullptr) : lt->Run(p, nullptr));
      ASSERT_OK(CudaSynchronize());
      std::vector<float> got(y0.size());
      ASSERT_OK(dy.CopyToHost(got.data(), got.size() * 4));
      const double c = path == Path::kPlain ? (s.k + 2) * std::ldexp(1.0, -24)
                                            : std::ldexp(1.0, -8) + (s.k + 4) * std::ldexp(1.0, -24);
      for (int r = 0; r < s.m; ++r) {
        for (int j = 0; j < s.n; ++j) {
          double mag = (with_bias ? std::fabs(bias[j]) : 0.0) + std::fabs(beta * y0[r * ys + j]);
          for (int q = 0; q < s.k; ++q) mag += std::fabs(double{x[r * xs + q]} * w32[int64_t{j} * s.k + q]);
          ASSERT_LE(std::fabs(got[r * ys + j] - ref[r * s.n + j]), c * mag + 1e-30)
              << "m " << s.m << " n " << s.n << " k " << s.k << " variant " << variant << " at " << r << "," << j;
        }
        for (int j = s.n; j < ys; ++j) ASSERT_EQ(got[r * ys + j], y0[r * ys + j]) << "padding past n was written";
      }
    }
  }
}

TEST(LinearCudaTest, PlainKernelWithinTheExactBound) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  CheckPath(Path::kPlain);
}

TEST(LinearCudaTest, CublasLtWithinTheBf16Bound) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto created = CublasLtLinear::Create();
  if (created.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << created.status().message();
  CheckPath(Path::kCublasLt);
}

TEST(LinearCudaTest, BadShapesAreInvalidArgument) {
  LinearCudaParams p;  // n = k = 0
  EXPECT_THAT(LinearCuda(p, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  p.n = p.k = 4;
  p.m = 2;
  p.x_row_stride = p.y_row_stride = 4;  // null pointers
  EXPECT_THAT(LinearCuda(p, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kernels
