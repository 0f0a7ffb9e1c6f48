// GpuModel against the CPU Model on the shipped kvspan-brown (a bf16 checkpoint, so both
// hold the same weights exactly): prefill, batched decode of sequences of different
// lengths, logits of every token, and the error paths. Built twice (gpu/CMakeLists.txt):
// gpu_model_emulated_test runs the kernels in the CPU emulator (CI), gpu_model_test on a
// GPU (skips without one).
#include "gpu/gpu_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "model/model.h"

namespace kvspan::gpu {
namespace {

using ::kvspan::testing::StatusIs;

constexpr char kModelDir[] = "models/kvspan-brown";

int ArgMax(const std::vector<float>& row, int offset, int n) {
  return static_cast<int>(std::max_element(row.begin() + offset, row.begin() + offset + n) - row.begin() - offset);
}

// The bound: both are fp32 over identical bf16 weights and differ only in the order of
// their sums (the GPU's plain GEMM sums in k order, the CPU's tiled kernels in blocks;
// softmax and RMSNorm reductions likewise), about 1e-6 relative per op through 4 layers:
// 2e-4 of the row's largest logit leaves two orders of margin, where a wrong RoPE, mask,
// norm or cache slot moves logits by O(1). cuBLASLt rounds activations to bf16 (2^-8
// relative per element): its bound is 3e-2 of the largest logit and the same top-1.
void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, int vocab, double rel,
                 const std::string& where) {
  ASSERT_EQ(gpu.size(), cpu.size()) << where;
  for (size_t row = 0; row * vocab < cpu.size(); ++row) {
    float max_abs = 0.0f;
    for (int j = 0; j < vocab; ++j) max_abs = std::max(max_abs, std::fabs(cpu[row * vocab + j]));
    for (int j = 0; j < vocab; ++j) {
      ASSERT_LE(std::fabs(gpu[row * vocab + j] - cpu[row * vocab + j]), rel * max_abs)
          << where << " row " << row << " token " << j;
    }
    EXPECT_EQ(ArgMax(gpu, row * vocab, vocab), ArgMax(cpu, row * vocab, vocab)) << where << " row " << row;
  }
}

class GpuModelTest : public ::testing::TestWithParam<GpuGemm> {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    auto gpu = GpuModel::Load(kModelDir, {.device = 0, .gemm = GetParam()});
    if (gpu.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << gpu.status().message();
    ASSERT_OK(gpu.status());
    gpu_ = std::move(*gpu);
    auto cpu = model::Model::Load(kModelDir, {.num_threads = 2});
    ASSERT_OK(cpu.status());
    cpu_ = std::move(*cpu);
    rel_ = gpu_->gemm_name() == "cublaslt" ? 3e-2 : 2e-4;
  }
  std::unique_ptr<GpuModel> gpu_;
  std::unique_ptr<model::Model> cpu_;
  double rel_ = 0;
};

TEST_P(GpuModelTest, PrefillAndBatchedDecodeMatchTheCpuModel) {
  const int vocab = gpu_->config().vocab_size;
  EXPECT_EQ(gpu_->config().fingerprint, cpu_->config().fingerprint) << "a bf16 checkpoint is exact in bf16";
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 300, 42, 9, 1000, 77, 3, 250, 11, 64},
                                                      {8, 4000, 12, 13}};
  std::vector<std::unique_ptr<GpuKvCache>> gpu_caches;
  std::vector<std::unique_ptr<model::DenseKvCache>> cpu_caches;
  std::vector<int32_t> next(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) {
    ASSERT_OK_AND_ASSIGN(auto gc, gpu_->NewCache(64));
    ASSERT_OK_AND_ASSIGN(auto cc, cpu_->NewDenseCache(64));
    std::vector<float> gl, cl;
    GpuForwardItem gi{.tokens = prompts[s], .cache = gc.get(), .logits_mode = model::LogitsMode::kAllTokens,
                      .logits = &gl};
    model::ForwardItem ci{.tokens = prompts[s], .cache = cc.get(), .logits_mode = model::LogitsMode::kAllTokens,
                          .logits = &cl};
    ASSERT_OK(gpu_->Forward(absl::MakeSpan(&gi, 1)));
    ASSERT_OK(cpu_->Forward(absl::MakeSpan(&ci, 1)));
    ExpectClose(gl, cl, vocab, rel_, "prefill " + std::to_string(s));
    EXPECT_EQ(gc->num_tokens(), static_cast<int>(prompts[s].size()));
    next[s] = ArgMax(cl, (prompts[s].size() - 1) * vocab, vocab);
    gpu_caches.push_back(std::move(gc));
    cpu_caches.push_back(std::move(cc));
  }
  // Greedy decode of both sequences in one batch (ragged lengths), against the CPU's batch.
  for (int step = 0; step < 4; ++step) {
    std::vector<std::vector<float>> gl(prompts.size()), cl(prompts.size());
    std::vector<GpuForwardItem> gb;
    std::vector<model::ForwardItem> cb;
    for (size_t s = 0; s < prompts.size(); ++s) {
      gb.push_back({.tokens = absl::MakeConstSpan(&next[s], 1), .cache = gpu_caches[s].get(), .logits = &gl[s]});
      cb.push_back({.tokens = absl::MakeConstSpan(&next[s], 1), .cache = cpu_caches[s].get(), .logits = &cl[s]});
    }
    ASSERT_OK(gpu_->Forward(absl::MakeSpan(gb)));
    ASSERT_OK(cpu_->Forward(absl::MakeSpan(cb)));
    for (size_t s = 0; s < prompts.size(); ++s) {
      ExpectClose(gl[s], cl[s], vocab, rel_, "decode step " + std::to_string(step) + " seq " + std::to_string(s));
      next[s] = ArgMax(cl[s], 0, vocab);
    }
  }
}

TEST_P(GpuModelTest, BadInputIsRejectedAndNoCacheChanges) {
  ASSERT_OK_AND_ASSIGN(auto cache, gpu_->NewCache(8));
  std::vector<float> logits;
  const std::vector<int32_t> bad = {1, gpu_->config().vocab_size};
  GpuForwardItem item{.tokens = bad, .cache = cache.get(), .logits = &logits};
  EXPECT_THAT(gpu_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<int32_t> nine(9, 5);  // one more than the cache holds
  item.tokens = nine;
  EXPECT_THAT(gpu_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(cache->num_tokens(), 0);
  std::vector<GpuForwardItem> twice = {item, item};
  twice[0].tokens = twice[1].tokens = absl::MakeConstSpan(nine.data(), 2);
  EXPECT_THAT(gpu_->Forward(absl::MakeSpan(twice)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(gpu_->Forward({}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(gpu_->NewCache(0), StatusIs(absl::StatusCode::kInvalidArgument));
  // The cache still serves after the rejections.
  item.tokens = absl::MakeConstSpan(nine.data(), 3);
  ASSERT_OK(gpu_->Forward(absl::MakeSpan(&item, 1)));
  EXPECT_EQ(cache->num_tokens(), 3);
}

INSTANTIATE_TEST_SUITE_P(Gemm, GpuModelTest, ::testing::Values(GpuGemm::kPlain, GpuGemm::kCublasLt),
                         [](const ::testing::TestParamInfo<GpuGemm>& info) {
                           return std::string(info.param == GpuGemm::kPlain ? "plain" : "cublaslt");
                         });

TEST(GpuModelLoadTest, MissingDeviceOrModelIsAnError) {
  EXPECT_THAT(GpuModel::Load(kModelDir, {.device = 99}), StatusIs(absl::StatusCode::kUnavailable));
  if (kernels::CudaDeviceCount() > 0) {
    EXPECT_THAT(GpuModel::Load("/nonexistent", {.device = 0}), StatusIs(absl::StatusCode::kNotFound));
  }
}

}  // namespace
}  // namespace kvspan::gpu
