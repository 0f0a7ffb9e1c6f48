// elementwise_cuda.h against the CPU contracts (internal/elementwise_test_cases.h): built
// twice, on the GPU (kernels_cuda_test; skips without a device) and in the CPU emulator
// (kernels_cuda_emulated_test, which runs everywhere). The input checks run in both.
#include "kernels/cuda/elementwise_cuda.h"

#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/internal/elementwise_test_cases.h"

namespace kvspan::kernels::internal {
namespace {

using ::kvspan::testing::StatusIs;

template <typename T>
DeviceBuffer Upload(const std::vector<T>& host) {
  DeviceBuffer d;
  EXPECT_OK(d.Reserve(sizeof(T)));  // an allocation even for no elements
  EXPECT_OK(d.Assign(host.data(), host.size() * sizeof(T)));
  return d;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& d, size_t n) {
  EXPECT_OK(CudaSynchronize());
  std::vector<T> host(n);
  EXPECT_OK(d.CopyToHost(host.data(), n * sizeof(T)));
  return host;
}

class GpuRunner : public ElementwiseRunner {
 public:
  std::vector<float> RmsNorm(RmsNormParams p, const std::vector<float>& x, const std::vector<float>& weight) override {
    DeviceBuffer dx = Upload(x), dw = Upload(weight), dout = Upload(std::vector<float>(p.num_rows * p.out_row_stride));
    p.x = dx.as<float>();
    p.weight = dw.as<float>();
    p.out = dout.as<float>();
    EXPECT_OK(RmsNormCuda(p, nullptr));
    return Download<float>(dout, p.num_rows * p.out_row_stride);
  }
  std::vector<float> SiluMul(SiluMulParams p, const std::vector<float>& gate, const std::vector<float>& up) override {
    DeviceBuffer dg = Upload(gate), du = Upload(up), dout = Upload(std::vector<float>(p.num_rows * p.out_row_stride));
    p.gate = dg.as<float>();
    p.up = du.as<float>();
    p.out = dout.as<float>();
    EXPECT_OK(SiluMulCuda(p, nullptr));
    return Download<float>(dout, p.num_rows * p.out_row_stride);
  }
  std::vector<float> Rope(RopeCudaParams p, const std::vector<float>& x, const std::vector<int32_t>& positions,
                          const std::vector<float>& inv_freq) override {
    DeviceBuffer dx = Upload(x), dp = Upload(positions), df = Upload(inv_freq);
    p.x = dx.as<float>();
    p.positions = dp.as<int32_t>();
    p.inv_freq = df.as<float>();
    EXPECT_OK(RopeCuda(p, nullptr));
    return Download<float>(dx, x.size());
  }
  std::vector<float> Embedding(EmbeddingCudaParams p, const std::vector<uint16_t>& table,
                               const std::vector<int32_t>& ids) override {
    DeviceBuffer dt = Upload(table), di = Upload(ids), dout = Upload(std::vector<float>(p.num_tokens * p.out_row_stride));
    p.table = dt.as<uint16_t>();
    p.ids = di.as<int32_t>();
    p.out = dout.as<float>();
    EXPECT_OK(EmbeddingCuda(p, nullptr));
    return Download<float>(dout, p.num_tokens * p.out_row_stride);
  }
  std::vector<int32_t> Argmax(ArgmaxCudaParams p, const std::vector<float>& logits) override {
    DeviceBuffer dl = Upload(logits), dout = Upload(std::vector<int32_t>(p.num_rows, -7));
    p.logits = dl.as<float>();
    p.out = dout.as<int32_t>();
    EXPECT_OK(ArgmaxCuda(p, nullptr));
    return Download<int32_t>(dout, p.num_rows);
  }
};

class ElementwiseCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
  GpuRunner runner_;
};

TEST_F(ElementwiseCudaTest, RmsNormMatchesReference) { CheckRmsNorm(runner_); }
TEST_F(ElementwiseCudaTest, SiluMulMatchesReference) { CheckSiluMul(runner_); }
TEST_F(ElementwiseCudaTest, RopeMatchesTheCpuPath) { CheckRope(runner_); }
TEST_F(ElementwiseCudaTest, EmbeddingGathersExactRows) { CheckEmbedding(runner_); }
TEST_F(ElementwiseCudaTest, ArgmaxIsModelArgMax) { CheckArgmax(runner_); }

// Every new key and value lands in its slot, and nothing else of the cache changes.
TEST(KvAppendCudaTest, CopiesRowsIntoTheirSlots) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(16);
  KvAppendCudaParams p;
  p.num_tokens = 5;
  p.num_kv_heads = 3;
  p.head_dim = 40;
  p.first = 7;
  p.src_row_stride = 250;  // keys [0, 120) and values [120, 240) of each row
  const int capacity = 16;
  p.head_stride = capacity * p.head_dim;
  const std::vector<float> src = RandomFloats(p.num_tokens * p.src_row_stride, 1.0f, rng);
  const std::vector<float> before = RandomFloats(p.num_kv_heads * p.head_stride, 1.0f, rng);
  DeviceBuffer dsrc = Upload(src), dk = Upload(before), dv = Upload(before);
  p.k = dsrc.as<float>();
  p.v = dsrc.as<float>() + 120;  // values after the keys in the same rows
  p.cache_k = dk.as<float>();
  p.cache_v = dv.as<float>();
  ASSERT_OK(KvAppendCuda(p, nullptr));
  const std::vector<float> k = Download<float>(dk, before.size()), v = Download<float>(dv, before.size());
  for (int g = 0; g < p.num_kv_heads; ++g) {
    for (int t = 0; t < capacity; ++t) {
      for (int d = 0; d < p.head_dim; ++d) {
        const int64_t slot = g * p.head_stride + t * p.head_dim + d;
        const int j = t - p.first;
        if (j >= 0 && j < p.num_tokens) {
          ASSERT_EQ(k[slot], src[j * p.src_row_stride + g * p.head_dim + d]);
          ASSERT_EQ(v[slot], src[j * p.src_row_stride + 120 + g * p.head_dim + d]);
        } else {
          ASSERT_EQ(k[slot], before[slot]);
          ASSERT_EQ(v[slot], before[slot]);
        }
      }
    }
  }
}

TEST(ElementwiseCudaErrorsTest, BadShapesAreInvalidArgument) {
  RmsNormParams norm;  // dim 0
  EXPECT_THAT(RmsNormCuda(norm, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  RopeCudaParams rope;
  rope.num_heads = 1;
  rope.head_dim = 3;  // odd
  rope.x_row_stride = 3;
  EXPECT_THAT(RopeCuda(rope, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  ArgmaxCudaParams argmax;
  argmax.num_rows = 1;
  argmax.vocab = 10;
  argmax.row_stride = 10;  // null pointers
  EXPECT_THAT(ArgmaxCuda(argmax, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kernels::internal
