// CudaSpanAttention against its contract (span_attention_cuda.h) on fresh random batches of
// every codec and shape (span_decode_test_util.h). Built twice: on the GPU
// (kernels_cuda_test; skips without a device) and in the CPU emulator
// (kernels_cuda_emulated_test, which runs everywhere). The input checks run in both.
#include "kernels/cuda/span_attention_cuda.h"

#include <limits>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/internal/span_decode_test_util.h"
#include "kernels/span_attention.h"

namespace kvspan::kernels {
namespace {

using internal::Case;
using internal::kAllSpanCodecs;
using internal::RandomBatch;
using ::kvspan::testing::StatusIs;

class SpanAttentionCudaTest : public ::testing::TestWithParam<Case> {};

// Runs `rb` through CudaSpanAttention with output poisoned (NaN) first, so every element
// must be written; returns the output and the number of work items.
std::vector<float> RunOnDevice(const RandomBatch& rb, int entries_per_split, int* num_items) {
  DeviceBuffer arena, q, out;
  const size_t n = rb.num_out_floats();
  EXPECT_OK(arena.Assign(rb.arena().data(), rb.arena().size()));
  EXPECT_OK(q.Assign(rb.q().data(), rb.q().size() * 4));
  const std::vector<float> poison(n, std::numeric_limits<float>::quiet_NaN());
  EXPECT_OK(out.Assign(poison.data(), n * 4));
  std::vector<SpanBlockView> views;
  std::vector<const float*> tail_k, tail_v;
  rb.Place(arena.as<uint8_t>(), &views, &tail_k, &tail_v);
  CudaSpanAttention attention(entries_per_split);
  EXPECT_OK(attention.Run(rb.Batch(views, tail_k, tail_v, q.as<float>(), out.as<float>()), nullptr));
  std::vector<float> got(n);
  EXPECT_OK(CudaSynchronize());
  EXPECT_OK(out.CopyToHost(got.data(), n * 4));
  *num_items = attention.last_num_work_items();
  return got;
}

TEST_P(SpanAttentionCudaTest, MatchesReference) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  for (uint32_t trial = 0; trial < 2; ++trial) {
    RandomBatch rb(c, 7919 * trial + c.head_dim * 31 + c.group);
    const std::vector<float> ref = internal::Reference(rb);
    int num_items = 0;
    const std::vector<float> got = RunOnDevice(rb, c.entries_per_split, &num_items);
    EXPECT_GT(num_items, 0);
    internal::ExpectWithinTolerance(got, ref, "trial " + std::to_string(trial));
  }
}

// The split along the context is invisible in the result: the same batch cut into one
// work item per entry and into one per (sequence, head).
TEST(SpanAttentionCudaSplitTest, SplitDoesNotChangeTheResult) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const Case c{"split", kAllSpanCodecs, 3, 2, 4, 64, 4, 24, 20, 0, 1, true, 3};
  RandomBatch rb(c, 99);
  const std::vector<float> ref = internal::Reference(rb);
  int fine = 0, coarse = 0;
  const std::vector<float> got_fine = RunOnDevice(rb, 1, &fine);
  const std::vector<float> got_coarse = RunOnDevice(rb, 1 << 20, &coarse);
  EXPECT_GT(fine, 4 * coarse);
  internal::ExpectWithinTolerance(got_fine, ref, "entries_per_split 1");
  internal::ExpectWithinTolerance(got_coarse, ref, "entries_per_split 2^20");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SpanAttentionCudaTest,
    ::testing::Values(
        Case{"bf16_d128_g4", {SpanCodec::kBF16}, 3, 2, 4, 128, 4, 70, 40, 0, 512, false},
        Case{"fp16_d64_g1", {SpanCodec::kFP16}, 2, 4, 1, 64, 3, 64, 20, 0, 512, false},
        Case{"int8_d128_g8", {SpanCodec::kInt8}, 2, 2, 8, 128, 5, 64, 30, 0, 512, true},
        Case{"int4_d96_g12", {SpanCodec::kInt4}, 2, 2, 12, 96, 4, 50, 25, 0, 64, true},
        Case{"int2_d256_g4", {SpanCodec::kInt2}, 2, 1, 4, 256, 3, 64, 20, 0, 512, true},
        Case{"mixed_window_split16", kAllSpanCodecs, 5, 2, 4, 128, 6, 64, 80, 150, 16, true},
        Case{"mixed_d32_g2_split1", kAllSpanCodecs, 3, 3, 2, 32, 3, 20, 10, 0, 1, true},
        Case{"mixed_d8_g3_window", kAllSpanCodecs, 6, 2, 3, 8, 4, 30, 60, 40, 32, true},
        Case{"int4_d128_g4_long", {SpanCodec::kInt4}, 1, 8, 4, 128, 64, 64, 64, 0, 512, false},
        // Prefill chunks: up to 40 queries per sequence, causal in the tail.
        Case{"prefill_mixed_d128_g4", kAllSpanCodecs, 4, 2, 4, 128, 5, 64, 80, 0, 64, true, 40},
        Case{"prefill_window_d64_g8", kAllSpanCodecs, 3, 2, 8, 64, 4, 40, 60, 25, 32, true, 17}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Input checks are made on the host, before the device is touched: they hold everywhere.
TEST(SpanAttentionCudaErrorsTest, BadBatchesAreInvalidArgument) {
  float dummy = 0.0f;
  const int32_t indptr[] = {0, 1};
  const int32_t tail_len[] = {0};
  SpanBlockView view;
  view.codec = SpanCodec::kInt4;
  view.head_dim = 64;
  view.num_entries = 4;
  view.group_size = 0;  // quantized codecs need a group size
  const uint8_t byte = 0;
  const uint16_t param = 0;
  view.key_data = view.value_data = &byte;
  view.key_params = view.value_params = &param;
  SpanAttentionBatch b;
  b.num_seqs = 1;
  b.num_kv_heads = 1;
  b.group = 1;
  b.head_dim = 64;
  b.q = &dummy;
  b.out = &dummy;
  b.block_indptr = indptr;
  b.blocks = &view;
  b.tail_len = tail_len;
  CudaSpanAttention attention;
  EXPECT_THAT(attention.Launch(nullptr), StatusIs(absl::StatusCode::kFailedPrecondition));  // no plan yet
  EXPECT_THAT(attention.Run(b, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  view.group_size = 32;
  b.head_dim = 300;  // past kCudaSpanMaxHeadDim
  EXPECT_THAT(attention.Run(b, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  b.head_dim = 64;
  b.window = 16;  // a window needs positions and query positions
  EXPECT_THAT(attention.Run(b, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  b.window = 0;
  const int32_t bad_indptr[] = {0, -1};
  b.block_indptr = bad_indptr;
  EXPECT_THAT(attention.Run(b, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  b.block_indptr = indptr;
  const int32_t long_tail[] = {3};  // a tail with no pointers
  b.tail_len = long_tail;
  EXPECT_THAT(attention.Run(b, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  b.tail_len = tail_len;
  // The valid batch: Unavailable without a device (and it would run with one, but these
  // host pointers are not device memory, so it is not run there).
  if (CudaDeviceCount() == 0) {
    EXPECT_THAT(attention.Run(b, nullptr), StatusIs(absl::StatusCode::kUnavailable));
  }
}

}  // namespace
}  // namespace kvspan::kernels
