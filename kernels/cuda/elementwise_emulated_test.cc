// elementwise_cuda.h's kernels (internal/elementwise_kernels.cuh) in the CPU emulator, on
// the launch shapes the GPU runs, against their CPU contracts (internal/
// elementwise_test_cases.h). Needs neither CUDA nor a GPU: it runs in CI.
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/internal/cpu_emulator.h"
#include "kernels/cuda/internal/elementwise_kernels.cuh"
#include "kernels/cuda/internal/elementwise_test_cases.h"

namespace kvspan::kernels::internal {
namespace {

using cuda_emulation::EmulateGrid;

class EmulatedRunner : public ElementwiseRunner {
 public:
  std::vector<float> RmsNorm(RmsNormParams p, const std::vector<float>& x, const std::vector<float>& weight) override {
    std::vector<float> out(p.num_rows * p.out_row_stride, 0.0f);
    p.x = x.data();
    p.weight = weight.data();
    p.out = out.data();
    const LaunchShape s = RmsNormShape(p);
    EmulateGrid(s.grid, s.block, [&] { RmsNormKernel(p); });
    return out;
  }
  std::vector<float> SiluMul(SiluMulParams p, const std::vector<float>& gate, const std::vector<float>& up) override {
    std::vector<float> out(p.num_rows * p.out_row_stride, 0.0f);
    p.gate = gate.data();
    p.up = up.data();
    p.out = out.data();
    const LaunchShape s = SiluMulShape(p);
    EmulateGrid(s.grid, s.block, [&] { SiluMulKernel(p); });
    return out;
  }
  std::vector<float> Rope(RopeCudaParams p, const std::vector<float>& x, const std::vector<int32_t>& positions,
                          const std::vector<float>& inv_freq) override {
    std::vector<float> out = x;
    p.x = out.data();
    p.positions = positions.data();
    p.inv_freq = inv_freq.data();
    const LaunchShape s = RopeShape(p);
    EmulateGrid(s.grid, s.block, [&] { RopeKernel(p); });
    return out;
  }
  std::vector<float> Embedding(EmbeddingCudaParams p, const std::vector<uint16_t>& table,
                               const std::vector<int32_t>& ids) override {
    std::vector<float> out(p.num_tokens * p.out_row_stride, 0.0f);
    p.table = table.data();
    p.ids = ids.data();
    p.out = out.data();
    const LaunchShape s = EmbeddingShape(p);
    EmulateGrid(s.grid, s.block, [&] { EmbeddingKernel(p); });
    return out;
  }
  std::vector<int32_t> Argmax(ArgmaxCudaParams p, const std::vector<float>& logits) override {
    std::vector<int32_t> out(p.num_rows, -7);
    p.logits = logits.data();
    p.out = out.data();
    const LaunchShape s = ArgmaxShape(p);
    EmulateGrid(s.grid, s.block, [&] { ArgmaxKernel(p); });
    return out;
  }
};

TEST(ElementwiseEmulatedTest, RmsNormMatchesReference) {
  EmulatedRunner r;
  CheckRmsNorm(r);
}
TEST(ElementwiseEmulatedTest, SiluMulMatchesReference) {
  EmulatedRunner r;
  CheckSiluMul(r);
}
TEST(ElementwiseEmulatedTest, RopeMatchesTheCpuPath) {
  EmulatedRunner r;
  CheckRope(r);
}
TEST(ElementwiseEmulatedTest, EmbeddingGathersExactRows) {
  EmulatedRunner r;
  CheckEmbedding(r);
}
TEST(ElementwiseEmulatedTest, ArgmaxIsModelArgMax) {
  EmulatedRunner r;
  CheckArgmax(r);
}

}  // namespace
}  // namespace kvspan::kernels::internal
