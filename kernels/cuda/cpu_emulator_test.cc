// The CPU emulator of kernels/cuda (internal/cpu_emulator.h): indices, barriers, shared
// memory and warp shuffles behave as on a GPU, and a barrier that not all threads reach
// aborts instead of hanging.
#include "kernels/cuda/internal/cpu_emulator.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvspan::kernels::cuda_emulation {
namespace {

TEST(CpuEmulatorTest, EveryThreadOfEveryBlockRunsOnceWithItsIndices) {
  const dim3 grid(3, 2, 2), block(32, 2, 1);
  std::vector<int> seen(3 * 2 * 2 * 64, 0);
  EmulateGrid(grid, block, [&] {
    ASSERT_EQ(blockDim.x, 32u);
    ASSERT_EQ(gridDim.y, 2u);
    const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned t = threadIdx.x + blockDim.x * threadIdx.y;
    ++seen[b * 64 + t];
  });
  for (int n : seen) EXPECT_EQ(n, 1);
}

TEST(CpuEmulatorTest, SyncThreadsPublishesSharedMemory) {
  std::vector<int> got(2 * 128, -1);
  EmulateGrid(dim3(2), dim3(128), [&] {
    __shared__ int shared[128];
    const int t = threadIdx.x;
    shared[t] = 1000 * blockIdx.x + t;
    __syncthreads();
    got[blockIdx.x * 128 + t] = shared[(t + 1) % 128];  // written by another warp for t = 31
    __syncthreads();
  });
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t < 128; ++t) EXPECT_EQ(got[b * 128 + t], 1000 * b + (t + 1) % 128);
  }
}

TEST(CpuEmulatorTest, ShuffleXorButterflyGivesEveryLaneTheWarpSum) {
  std::vector<float> got(96, 0.0f);
  std::vector<int> partner(96, -1);
  EmulateGrid(dim3(1), dim3(96), [&] {
    const int t = threadIdx.x;
    partner[t] = __shfl_xor_sync(0xffffffffu, t, 5);
    // Warps run different numbers of shuffles: each warp synchronizes only with itself.
    float acc = static_cast<float>(t);
    const int rounds = 1 + t / 32;
    for (int r = 0; r < rounds; ++r) {
      for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    }
    got[t] = acc;
  });
  for (int t = 0; t < 96; ++t) {
    EXPECT_EQ(partner[t], t ^ 5);
    const int warp = t / 32;
    float expected = 0.0f;
    for (int l = 0; l < 32; ++l) expected += warp * 32 + l;
    for (int r = 1; r < 1 + warp; ++r) expected *= 32;  // each further round sums 32 equal values
    EXPECT_EQ(got[t], expected) << t;
  }
}

TEST(CpuEmulatorDeathTest, DivergentBarrierAborts) {
  EXPECT_DEATH(EmulateGrid(dim3(1), dim3(64),
                           [] {
                             if (threadIdx.x < 32) __syncthreads();
                           }),
               "deadlock");
}

TEST(CpuEmulatorDeathTest, PartialShuffleMaskAborts) {
  EXPECT_DEATH(EmulateGrid(dim3(1), dim3(32), [] { __shfl_xor_sync(0xffffu, 1.0f, 1); }), "partial mask");
}

}  // namespace
}  // namespace kvspan::kernels::cuda_emulation
