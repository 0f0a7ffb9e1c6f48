// elementwise_cuda.h against the CPU contracts (RmsNormRef, SiluMulRef, the CPU's RoPE,
// exact rows and slots, model::ArgMax's rule, the random fill's formula): built twice, on the GPU (kernels_cuda_test; skips without a device) and in the CPU emulator
// (kernels_cuda_emulated_test, which runs everywhere). The input checks run in both.
#include "kernels/cuda/elementwise_cuda.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/float16.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"

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

// Runs one op on host vectors: copies them to the device, runs it, copies the output back.
class GpuRunner {
 public:
  std::vector<float> RmsNorm(RmsNormParams p, const std::vector<float>& x, const std::vector<float>& weight) {
    DeviceBuffer dx = Upload(x), dw = Upload(weight), dout = Upload(std::vector<float>(p.num_rows * p.out_row_stride));
    p.x = dx.as<float>();
    p.weight = dw.as<float>();
    p.out = dout.as<float>();
    EXPECT_OK(RmsNormCuda(p, nullptr));
    return Download<float>(dout, p.num_rows * p.out_row_stride);
  }
  std::vector<float> SiluMul(SiluMulParams p, const std::vector<float>& gate, const std::vector<float>& up) {
    DeviceBuffer dg = Upload(gate), du = Upload(up), dout = Upload(std::vector<float>(p.num_rows * p.out_row_stride));
    p.gate = dg.as<float>();
    p.up = du.as<float>();
    p.out = dout.as<float>();
    EXPECT_OK(SiluMulCuda(p, nullptr));
    return Download<float>(dout, p.num_rows * p.out_row_stride);
  }
  std::vector<float> Rope(RopeCudaParams p, const std::vector<float>& x, const std::vector<int32_t>& positions,
                          const std::vector<float>& inv_freq) {
    DeviceBuffer dx = Upload(x), dp = Upload(positions), df = Upload(inv_freq);
    p.x = dx.as<float>();
    p.positions = dp.as<int32_t>();
    p.inv_freq = df.as<float>();
    EXPECT_OK(RopeCuda(p, nullptr));
    return Download<float>(dx, x.size());
  }
  std::vector<float> Embedding(EmbeddingCudaParams p, const std::vector<uint16_t>& table,
                               const std::vector<int32_t>& ids) {
    DeviceBuffer dt = Upload(table), di = Upload(ids), dout = Upload(std::vector<float>(p.num_tokens * p.out_row_stride));
    p.table = dt.as<uint16_t>();
    p.ids = di.as<int32_t>();
    p.out = dout.as<float>();
    EXPECT_OK(EmbeddingCuda(p, nullptr));
    return Download<float>(dout, p.num_tokens * p.out_row_stride);
  }
  std::vector<int32_t> Argmax(ArgmaxCudaParams p, const std::vector<float>& logits) {
    DeviceBuffer dl = Upload(logits), dout = Upload(std::vector<int32_t>(p.num_rows, -7));
    p.logits = dl.as<float>();
    p.out = dout.as<int32_t>();
    EXPECT_OK(ArgmaxCuda(p, nullptr));
    return Download<int32_t>(dout, p.num_rows);
  }
};

// The checks of each op against its CPU contract.
std::vector<float> RandomFloats(size_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(n);
  for (float& f : x) f = normal(rng);
  return x;
}

// fp32 with a block-wide sum (strided partials of <= dim / 256 terms, then 8 + 5 levels):
// far inside 1e-5 relative; a wrong eps, mean or weight is far outside.
void CheckRmsNorm(GpuRunner& runner) {
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
void CheckSiluMul(GpuRunner& runner) {
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
void CheckRope(GpuRunner& runner) {
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

void CheckEmbedding(GpuRunner& runner) {
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
int32_t ArgMaxSpec(const float* row, int n) {
  int32_t best = -1;
  for (int i = 0; i < n; ++i) {
    if (std::isfinite(row[i]) && (best < 0 || row[i] > row[best])) best = i;
  }
  return best < 0 ? 0 : best;
}

void CheckArgmax(GpuRunner& runner) {
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

// RandomUniformBf16Params' formula, written out on the host (the specification).
uint16_t RandomUniformBf16Spec(uint64_t seed, int64_t i, float bound) {
  uint64_t z = seed + static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = std::ldexp(static_cast<float>(z >> 40), -24);
  return FloatToBf16((u * 2.0f - 1.0f) * bound);
}

// Every element written, each the formula's bits (counts around the block's 2048 elements,
// and a seed that wraps the 64-bit sum); the values span [-bound, bound] and two seeds differ.
TEST(RandomUniformBf16CudaTest, EachElementIsTheFormulasBits) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  for (const int64_t count : {int64_t{1}, int64_t{255}, int64_t{2048}, int64_t{2049}, int64_t{70001}}) {
    for (const uint64_t seed : {uint64_t{0}, uint64_t{7}, ~uint64_t{0} - 3}) {
      const float bound = count == 1 ? 0.0f : 0.0625f;
      DeviceBuffer d = Upload(std::vector<uint16_t>(count + 5, 0x7fc1));  // NaN poison, 5 past the end
      RandomUniformBf16Params p;
      p.out = d.as<uint16_t>();
      p.count = count;
      p.seed = seed;
      p.bound = bound;
      ASSERT_OK(RandomUniformBf16Cuda(p, nullptr));
      const std::vector<uint16_t> got = Download<uint16_t>(d, count + 5);
      float lo = 0.0f, hi = 0.0f;
      for (int64_t i = 0; i < count; ++i) {
        ASSERT_EQ(got[i], RandomUniformBf16Spec(seed, i, bound)) << "count " << count << " seed " << seed << " i " << i;
        lo = std::min(lo, Bf16ToFloat(got[i]));
        hi = std::max(hi, Bf16ToFloat(got[i]));
      }
      for (int64_t i = count; i < count + 5; ++i) ASSERT_EQ(got[i], 0x7fc1) << "written past the end";
      EXPECT_GE(lo, -bound);
      EXPECT_LE(hi, bound);
      if (count > 1000) {
        EXPECT_LT(lo, -0.9f * bound);
        EXPECT_GT(hi, 0.9f * bound);
      }
    }
  }
  EXPECT_NE(RandomUniformBf16Spec(1, 0, 1.0f), RandomUniformBf16Spec(2, 0, 1.0f));
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
  RandomUniformBf16Params fill;
  fill.count = 4;  // null out
  EXPECT_THAT(RandomUniformBf16Cuda(fill, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  uint16_t one = 0;
  fill.out = &one;
  fill.count = 1;
  fill.bound = std::numeric_limits<float>::infinity();
  EXPECT_THAT(RandomUniformBf16Cuda(fill, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  fill.bound = -1.0f;
  EXPECT_THAT(RandomUniformBf16Cuda(fill, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kernels::internal
