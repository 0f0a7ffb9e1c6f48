#include "kernels/cuda/attention_cuda.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"

namespace kvspan::kernels {
namespace {

struct Shape {
  int num_q, num_keys, num_heads, num_kv_heads, head_dim, window;
};

class AttentionCudaTest : public ::testing::TestWithParam<Shape> {};

TEST_P(AttentionCudaTest, MatchesReference) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const Shape s = GetParam();
  std::mt19937 rng(1234 + s.num_keys);
  std::normal_distribution<float> normal(0.f, 1.f);
  auto fill = [&](std::vector<float>& x) { for (float& f : x) f = normal(rng); };
  const int row = s.num_heads * s.head_dim;
  std::vector<float> q(s.num_q * row), k(s.num_kv_heads * s.num_keys * s.head_dim),
      v(k.size()), out(s.num_q * row, 0.f), ref(s.num_q * row, 0.f);
  fill(q);
  fill(k);
  fill(v);
  AttentionParams p;
  p.q = q.data();
  p.q_row_stride = row;
  p.k = k.data();
  p.k_head_stride = static_cast<int64_t>(s.num_keys) * s.head_dim;
  p.k_token_stride = s.head_dim;
  p.v = v.data();
  p.v_head_stride = p.k_head_stride;
  p.v_token_stride = s.head_dim;
  p.out = ref.data();
  p.out_row_stride = row;
  p.num_q = s.num_q;
  p.num_keys = s.num_keys;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.head_dim = s.head_dim;
  p.q_start = s.num_keys - s.num_q;
  p.window = s.window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  AttentionRef(p);
  p.out = out.data();
  ASSERT_OK(AttentionCuda(p));
  // fp32 accumulation over up to ~1000 keys against a double reference, with __expf.
  constexpr float kAtol = 2e-5f, kRtol = 1e-3f;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_LE(std::fabs(out[i] - ref[i]), kAtol + kRtol * std::fabs(ref[i])) << "i=" << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCudaTest,
                         ::testing::Values(Shape{1, 1, 1, 1, 32, 0}, Shape{1, 257, 8, 2, 64, 0},
                                           Shape{7, 100, 4, 4, 128, 0}, Shape{3, 600, 32, 8, 64, 0},
                                           Shape{5, 300, 8, 1, 256, 64}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           const Shape& s = info.param;
                           return "q" + std::to_string(s.num_q) + "_keys" + std::to_string(s.num_keys) +
                                  "_h" + std::to_string(s.num_heads) + "_kv" +
                                  std::to_string(s.num_kv_heads) + "_d" + std::to_string(s.head_dim) +
                                  "_w" + std::to_string(s.window);
                         });

TEST(AttentionCudaErrorsTest, UnavailableWithoutDeviceOrBadParams) {
  AttentionParams p;
  if (CudaDeviceCount() == 0) {
    EXPECT_THAT(AttentionCuda(p), kvspan::testing::StatusIs(absl::StatusCode::kUnavailable));
  } else {
    EXPECT_THAT(AttentionCuda(p), kvspan::testing::StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

}  // namespace
}  // namespace kvspan::kernels
