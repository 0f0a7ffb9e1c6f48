// The kernels of CudaSpanAttention (internal/span_decode_kernels.cuh) run by the CPU
// emulator (internal/cpu_emulator.h) on the same plan as on a GPU, against the contract of
// span_attention_cuda.h computed from the CPU references. It needs no GPU and no CUDA
// toolkit, so it runs in CI: the GPU test (span_attention_cuda_test.cc) then checks, where a
// device exists, only what the emulator cannot (the device's own arithmetic and memory).
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/internal/cpu_emulator.h"
#include "kernels/cuda/internal/span_decode_kernels.cuh"
#include "kernels/cuda/internal/span_decode_plan.h"
#include "kernels/cuda/internal/span_decode_test_util.h"

namespace kvspan::kernels::internal {
namespace {

using cuda_emulation::EmulateGrid;

// CudaSpanAttention::Run on host memory: the same checks, plan, kernel arguments and
// grids, with the kernels emulated.
std::vector<float> RunEmulated(const RandomBatch& rb, int entries_per_split, int* num_items) {
  std::vector<SpanBlockView> views;
  std::vector<const float*> tail_k, tail_v;
  rb.Place(rb.arena().data(), &views, &tail_k, &tail_v);
  std::vector<float> out(rb.q().size(), std::numeric_limits<float>::quiet_NaN());  // poison
  const SpanAttentionBatch b = rb.Batch(views, tail_k, tail_v, rb.q().data(), out.data());
  EXPECT_OK(ValidateSpanAttentionBatch(b));
  const SpanDecodePlan plan = PlanSpanDecode(b, entries_per_split);
  *num_items = static_cast<int>(plan.items.size());
  const int64_t rows = plan.num_rows;
  std::vector<float> m(rows, -1.0f), s(rows, -1.0f), o(rows * b.head_dim, -1.0f);
  SpanDecodeBuffers buffers;
  buffers.items = plan.items.data();
  buffers.blocks = views.data();
  buffers.slot_indptr = plan.slot_indptr.data();
  buffers.part_m = m.data();
  buffers.part_s = s.data();
  buffers.part_o = o.data();
  const SpanDecodePartialArgs pa = MakeSpanDecodePartialArgs(b, plan, buffers);
  if (*num_items > 0) {
    const dim3 grid(*num_items, (plan.max_item_rows + kSpanDecodeRows - 1) / kSpanDecodeRows);
    DispatchChannelsPerLane(b.head_dim, [&](auto cpl) {
      EmulateGrid(grid, dim3(kSpanDecodeThreads), [&] { SpanDecodePartialKernel<decltype(cpl)::value>(pa); });
    });
  }
  const SpanDecodeMergeArgs ma = MakeSpanDecodeMergeArgs(b, buffers);
  EmulateGrid(dim3(b.num_seqs * b.num_kv_heads), dim3(kSpanDecodeThreads), [&] { SpanDecodeMergeKernel(ma); });
  return out;
}

class SpanAttentionEmulatedTest : public ::testing::TestWithParam<Case> {};

TEST_P(SpanAttentionEmulatedTest, MatchesReference) {
  const Case& c = GetParam();
  for (uint32_t trial = 0; trial < 2; ++trial) {
    RandomBatch rb(c, 104729 * trial + c.head_dim * 17 + c.group);
    const std::vector<float> ref = Reference(rb);
    int num_items = 0;
    const std::vector<float> got = RunEmulated(rb, c.entries_per_split, &num_items);
    EXPECT_GT(num_items, 0);
    ExpectWithinTolerance(got, ref, "trial " + std::to_string(trial));
  }
}

// The split along the context is invisible in the result: the same batch cut into one
// work item per entry and into one per (sequence, head).
TEST(SpanAttentionEmulatedSplitTest, SplitDoesNotChangeTheResult) {
  const Case c{"split", kAllSpanCodecs, 3, 2, 4, 64, 4, 24, 20, 0, 1, true};
  RandomBatch rb(c, 99);
  const std::vector<float> ref = Reference(rb);
  int fine = 0, coarse = 0;
  const std::vector<float> got_fine = RunEmulated(rb, 1, &fine);
  const std::vector<float> got_coarse = RunEmulated(rb, 1 << 20, &coarse);
  EXPECT_GT(fine, 4 * coarse);
  ExpectWithinTolerance(got_fine, ref, "entries_per_split 1");
  ExpectWithinTolerance(got_coarse, ref, "entries_per_split 2^20");
}

// Fewer, smaller batches than the GPU test: the emulator switches fibers at every shuffle.
INSTANTIATE_TEST_SUITE_P(
    Shapes, SpanAttentionEmulatedTest,
    ::testing::Values(Case{"bf16_d128_g4", {SpanCodec::kBF16}, 2, 2, 4, 128, 3, 40, 20, 0, 512, false},
                      Case{"fp16_d64_g1", {SpanCodec::kFP16}, 2, 2, 1, 64, 2, 40, 12, 0, 512, false},
                      Case{"int8_d128_g8", {SpanCodec::kInt8}, 1, 2, 8, 128, 3, 32, 10, 0, 512, true},
                      Case{"int4_d96_g12", {SpanCodec::kInt4}, 1, 2, 12, 96, 3, 30, 10, 0, 40, true},
                      Case{"int2_d256_g4", {SpanCodec::kInt2}, 1, 1, 4, 256, 2, 40, 10, 0, 512, true},
                      Case{"mixed_window_split16", kAllSpanCodecs, 3, 2, 4, 64, 4, 32, 40, 50, 16, true},
                      Case{"mixed_d32_g2_split1", kAllSpanCodecs, 2, 2, 2, 32, 2, 12, 6, 0, 1, true},
                      Case{"mixed_d8_g3_window", kAllSpanCodecs, 4, 2, 3, 8, 3, 20, 30, 20, 32, true},
                      // Prefill chunks: up to 13 queries per sequence, causal in the tail.
                      Case{"prefill_mixed_d64_g4", kAllSpanCodecs, 3, 2, 4, 64, 3, 24, 30, 0, 32, true, 13},
                      Case{"prefill_window_d32_g3", kAllSpanCodecs, 3, 2, 3, 32, 3, 24, 40, 18, 16, true, 9}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace kvspan::kernels::internal
