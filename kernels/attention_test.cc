#include "kernels/attention.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvspan::kernels {
namespace {

// |out - ref| <= kAtol + kRtol * |ref|. The fast path differs from the double reference
// only by fp32 rounding in dot products of <= 128 terms and a softmax over <= 600 keys.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;

struct Shape {
  int head_dim;
  int group;  // query heads per KV head (GQA ratio)
  int num_q;
  int q_start;
  int window;
  float q_scale;  // multiplies q: large values stress the online softmax
};

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) {
  const Shape& s = info.param;
  return absl::StrCat("hd", s.head_dim, "_g", s.group, "_q", s.num_q, "_start", s.q_start, "_win",
                      s.window, "_x", static_cast<int>(s.q_scale));
}

class AttentionTest : public ::testing::TestWithParam<Shape> {};

TEST_P(AttentionTest, FastMatchesReference) {
  const Shape& s = GetParam();
  constexpr int kNumKvHeads = 2;
  const int num_heads = kNumKvHeads * s.group;
  const int num_keys = s.q_start + s.num_q;
  // Padded strides, as in a cache with spare capacity and a fused qkv row.
  const int64_t q_row_stride = num_heads * s.head_dim + 3 * s.head_dim;
  const int64_t k_token_stride = s.head_dim;
  const int64_t k_head_stride = (num_keys + 5) * k_token_stride;
  const int64_t v_token_stride = s.head_dim + 8;
  const int64_t v_head_stride = (num_keys + 1) * v_token_stride;
  const int64_t out_row_stride = num_heads * s.head_dim + s.head_dim;

  std::mt19937 rng(1234 + s.head_dim * 7 + s.group * 131 + s.num_q * 17 + s.q_start);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto fill = [&](std::vector<float>& v, float scale) {
    for (float& x : v) x = dist(rng) * scale;
  };
  std::vector<float> q(s.num_q * q_row_stride), k(kNumKvHeads * k_head_stride),
      v(kNumKvHeads * v_head_stride);
  fill(q, s.q_scale);
  fill(k, 1.0f);
  fill(v, 1.0f);
  std::vector<float> out(s.num_q * out_row_stride, NAN), ref(s.num_q * out_row_stride, NAN);

  AttentionParams p;
  p.q = q.data();
  p.q_row_stride = q_row_stride;
  p.k = k.data();
  p.k_head_stride = k_head_stride;
  p.k_token_stride = k_token_stride;
  p.v = v.data();
  p.v_head_stride = v_head_stride;
  p.v_token_stride = v_token_stride;
  p.out_row_stride = out_row_stride;
  p.num_q = s.num_q;
  p.num_keys = num_keys;
  p.num_heads = num_heads;
  p.num_kv_heads = kNumKvHeads;
  p.head_dim = s.head_dim;
  p.q_start = s.q_start;
  p.window = s.window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));

  p.out = ref.data();
  AttentionRef(p);
  ThreadPool pool(2);
  for (ThreadPool* used_pool : {static_cast<ThreadPool*>(nullptr), &pool}) {
    p.out = out.data();
    Attention(p, used_pool);
    double max_err = 0.0;
    for (int j = 0; j < s.num_q; ++j) {
      for (int i = 0; i < num_heads * s.head_dim; ++i) {
        const double r = ref[j * out_row_stride + i];
        const double o = out[j * out_row_stride + i];
        ASSERT_LE(std::abs(o - r), kAtol + kRtol * std::abs(r))
            << "query " << j << " element " << i << " pool " << (used_pool != nullptr);
        max_err = std::max(max_err, std::abs(o - r));
      }
    }
    RecordProperty("max_abs_err", std::to_string(max_err));
  }
}

std::vector<Shape> Shapes() {
  struct Case {
    int num_q, q_start, window;
    float q_scale;
  };
  const Case cases[] = {
      {1, 0, 0, 1},     {1, 599, 0, 1},   {70, 0, 0, 1},    {17, 300, 0, 1}, {33, 500, 64, 1},
      {1, 400, 128, 1}, {70, 530, 100, 1}, {9, 64, 1, 1},   {5, 200, 0, 30},
  };
  std::vector<Shape> shapes;
  for (int head_dim : {20, 32, 40, 64, 128}) {  // 20: query by query; 40: values 32 + 8 wide
    for (int group : {1, 2, 4, 8}) {
      for (const Case& c : cases) {
        shapes.push_back({head_dim, group, c.num_q, c.q_start, c.window, c.q_scale});
      }
    }
  }
  return shapes;
}

INSTANTIATE_TEST_SUITE_P(Sweep, AttentionTest, ::testing::ValuesIn(Shapes()), ShapeName);

TEST(AttentionRefTest, SingleKeyReturnsItsValue) {
  // One query at position 0 sees only key 0: the output is v[0] whatever the scores.
  const std::vector<float> q = {3, -1, 2, 5}, k = {1, 2, 3, 4}, v = {0.5f, -2, 7, 1};
  std::vector<float> out(4);
  AttentionParams p;
  p.q = q.data();
  p.q_row_stride = 4;
  p.k = k.data();
  p.k_head_stride = 4;
  p.k_token_stride = 4;
  p.v = v.data();
  p.v_head_stride = 4;
  p.v_token_stride = 4;
  p.out = out.data();
  p.out_row_stride = 4;
  p.num_q = p.num_keys = p.num_heads = p.num_kv_heads = 1;
  p.head_dim = 4;
  p.scale = 0.5f;
  AttentionRef(p);
  EXPECT_EQ(out, v);
}

TEST(AttentionRefTest, EqualScoresAverageTheWindow) {
  // Zero queries give equal scores: the output is the mean of the values in the window.
  const int num_keys = 6, window = 3;
  std::vector<float> q(2, 0.0f), k(num_keys * 2, 1.0f), v(num_keys * 2), out(2);
  for (int t = 0; t < num_keys; ++t) v[2 * t] = v[2 * t + 1] = static_cast<float>(t);
  AttentionParams p;
  p.q = q.data();
  p.q_row_stride = 2;
  p.k = k.data();
  p.k_head_stride = num_keys * 2;
  p.k_token_stride = 2;
  p.v = v.data();
  p.v_head_stride = num_keys * 2;
  p.v_token_stride = 2;
  p.out = out.data();
  p.out_row_stride = 2;
  p.num_q = 1;
  p.num_keys = num_keys;
  p.num_heads = p.num_kv_heads = 1;
  p.head_dim = 2;
  p.q_start = num_keys - 1;
  p.window = window;
  AttentionRef(p);
  EXPECT_FLOAT_EQ(out[0], (3 + 4 + 5) / 3.0f);
}

}  // namespace
}  // namespace kvspan::kernels
