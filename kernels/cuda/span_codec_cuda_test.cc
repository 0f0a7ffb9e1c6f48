// EncodeSpanCuda against kvcache::EncodeBlock, its contract, bit for bit: every codec, group
// sizes that divide the shapes and ones that leave partial groups, constant groups, entries
// gathered through token_index, and the values EncodeBlock rejects. Built twice: on the GPU (kernels_cuda_test; skips without a
// device) and in the CPU emulator (kernels_cuda_emulated_test).
#include "kernels/cuda/span_codec_cuda.h"

#include <cmath>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_memory.h"
#include "kvcache/entry_block.h"

namespace kvspan::kernels {
namespace {

using ::kvspan::testing::StatusIs;

struct CodecCase {
  SpanCodec codec;
  int group_size, num_entries, head_dim;
};

std::string Name(const CodecCase& c) {
  return std::string(kvcache::CodecName(static_cast<kvcache::Codec>(c.codec))) + "_g" + std::to_string(c.group_size) +
         "_n" + std::to_string(c.num_entries) + "_d" + std::to_string(c.head_dim);
}

// Encodes kLayers x kHeads blocks of `num_tokens` random tokens each, entry e of every block
// being token index[e] (`index` empty: every token, through a null token_index), and checks
// each block against EncodeBlock of its entries gathered on the host.
void ExpectMatchesEncodeBlock(const CodecCase& c, int num_tokens, const std::vector<int32_t>& index) {
  constexpr int kLayers = 2, kHeads = 3;
  const int n = index.empty() ? num_tokens : static_cast<int>(index.size());
  ASSERT_EQ(c.num_entries, n);
  const int64_t token_stride = c.head_dim + 3, head_stride = (num_tokens + 2) * token_stride;
  const int64_t layer_stride = kHeads * head_stride + 5;
  std::mt19937 rng(31 + n * 7 + c.head_dim + num_tokens);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> keys(kLayers * layer_stride), values(keys.size());
  for (float& x : keys) x = normal(rng);
  for (float& x : values) x = normal(rng) * 3.0f;
  // A constant key channel and a constant value row in block (0, 0): scale 0 groups.
  for (int t = 0; t < num_tokens; ++t) keys[t * token_stride + 0] = 0.75f;
  const int first = index.empty() ? 0 : index[0];
  for (int d = 0; d < c.head_dim; ++d) values[first * token_stride + d] = -2.5f;

  DeviceBuffer dk, dv, kd, vd, kp, vp, di;
  ASSERT_OK(dk.Assign(keys.data(), keys.size() * 4));
  ASSERT_OK(dv.Assign(values.data(), values.size() * 4));
  if (!index.empty()) {
    ASSERT_OK(di.Assign(index.data(), index.size() * 4));
  }
  const int blocks = kLayers * kHeads;
  const int64_t row = SpanCodecRowBytes(c.codec, c.head_dim);
  const int64_t kpc = SpanCodecKeyParamCount(c.codec, c.group_size, n, c.head_dim);
  const int64_t vpc = SpanCodecValueParamCount(c.codec, c.group_size, n, c.head_dim);
  ASSERT_OK(kd.Reserve(blocks * n * row));
  ASSERT_OK(vd.Reserve(blocks * n * row));
  ASSERT_OK(kp.Reserve(std::max<int64_t>(1, blocks * kpc) * 2));
  ASSERT_OK(vp.Reserve(std::max<int64_t>(1, blocks * vpc) * 2));
  SpanCodecCudaParams p;
  p.codec = c.codec;
  p.group_size = c.group_size;
  p.num_layers = kLayers;
  p.num_kv_heads = kHeads;
  p.num_entries = n;
  p.head_dim = c.head_dim;
  p.keys = dk.as<float>();
  p.values = dv.as<float>();
  p.layer_stride = layer_stride;
  p.head_stride = head_stride;
  p.token_stride = token_stride;
  p.token_index = index.empty() ? nullptr : di.as<int32_t>();
  p.key_data = kd.as<uint8_t>();
  p.value_data = vd.as<uint8_t>();
  p.key_params = kp.as<uint16_t>();
  p.value_params = vp.as<uint16_t>();
  ASSERT_OK(EncodeSpanCuda(p, nullptr));
  std::vector<uint8_t> got_kd(blocks * n * row), got_vd(got_kd.size());
  std::vector<uint16_t> got_kp(blocks * kpc), got_vp(blocks * vpc);
  ASSERT_OK(kd.CopyToHost(got_kd.data(), got_kd.size()));
  ASSERT_OK(vd.CopyToHost(got_vd.data(), got_vd.size()));
  ASSERT_OK(kp.CopyToHost(got_kp.data(), got_kp.size() * 2));
  ASSERT_OK(vp.CopyToHost(got_vp.data(), got_vp.size() * 2));

  for (int b = 0; b < blocks; ++b) {
    const int l = b / kHeads, h = b % kHeads;
    std::vector<float> k(n * c.head_dim), v(k.size());
    std::vector<int32_t> positions(n);
    for (int e = 0; e < n; ++e) {
      const int t = index.empty() ? e : index[e];
      positions[e] = t;
      for (int d = 0; d < c.head_dim; ++d) {
        k[e * c.head_dim + d] = keys[l * layer_stride + h * head_stride + t * token_stride + d];
        v[e * c.head_dim + d] = values[l * layer_stride + h * head_stride + t * token_stride + d];
      }
    }
    const std::vector<float> log_counts(n, 0.0f);
    ASSERT_OK_AND_ASSIGN(kvcache::EntryBlock ref,
                         kvcache::EncodeBlock({static_cast<kvcache::Codec>(c.codec), c.group_size},
                                              {c.head_dim, positions, log_counts, k, v}));
    auto slice = [](const auto& all, int64_t begin, int64_t count) {
      return std::vector<typename std::decay_t<decltype(all)>::value_type>(all.begin() + begin,
                                                                           all.begin() + begin + count);
    };
    const int64_t codes = n * row;
    EXPECT_EQ(slice(got_kd, b * codes, codes), ref.key_data) << "key codes of block " << b;
    EXPECT_EQ(slice(got_vd, b * codes, codes), ref.value_data) << "value codes of block " << b;
    EXPECT_EQ(slice(got_kp, b * kpc, kpc), ref.key_params) << "key params of block " << b;
    EXPECT_EQ(slice(got_vp, b * vpc, vpc), ref.value_params) << "value params of block " << b;
  }
}

class SpanCodecCudaTest : public ::testing::TestWithParam<CodecCase> {};

TEST_P(SpanCodecCudaTest, MatchesEncodeBlockBitForBit) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ExpectMatchesEncodeBlock(GetParam(), GetParam().num_entries, {});
}

INSTANTIATE_TEST_SUITE_P(
    Codecs, SpanCodecCudaTest,
    ::testing::Values(CodecCase{SpanCodec::kBF16, 0, 16, 64}, CodecCase{SpanCodec::kFP16, 0, 5, 33},
                      CodecCase{SpanCodec::kInt8, 32, 64, 128}, CodecCase{SpanCodec::kInt8, 7, 16, 33},
                      CodecCase{SpanCodec::kInt4, 32, 64, 128}, CodecCase{SpanCodec::kInt4, 64, 40, 96},
                      CodecCase{SpanCodec::kInt4, 1, 3, 9}, CodecCase{SpanCodec::kInt2, 16, 16, 64},
                      CodecCase{SpanCodec::kInt2, 5, 21, 35}),
    [](const ::testing::TestParamInfo<CodecCase>& info) { return Name(info.param); });

// Gathered entries (token_index): what a sinks / window policy keeps. The entries are
// index.size() of num_tokens tokens: one entry, a sinks + window pattern, scattered runs
// that leave partial key groups, a contiguous run that does not start at token 0.
struct GatherCase {
  CodecCase codec;  // num_entries == index.size()
  int num_tokens;
  std::vector<int32_t> index;
};

void PrintTo(const GatherCase& c, std::ostream* os) {
  *os << Name(c.codec) << " of " << c.num_tokens << " tokens from " << c.index[0];
}

class SpanCodecCudaGatherTest : public ::testing::TestWithParam<GatherCase> {};

TEST_P(SpanCodecCudaGatherTest, MatchesEncodeBlockOfTheGatheredEntries) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ExpectMatchesEncodeBlock(GetParam().codec, GetParam().num_tokens, GetParam().index);
}

INSTANTIATE_TEST_SUITE_P(
    Gathers, SpanCodecCudaGatherTest,
    ::testing::Values(GatherCase{{SpanCodec::kInt8, 32, 12, 64}, 64, {0, 1, 2, 3, 56, 57, 58, 59, 60, 61, 62, 63}},
                      GatherCase{{SpanCodec::kInt4, 32, 1, 128}, 64, {63}},
                      GatherCase{{SpanCodec::kInt4, 1, 1, 9}, 9, {4}},
                      GatherCase{{SpanCodec::kInt2, 5, 8, 35}, 21, {0, 2, 3, 7, 11, 12, 13, 20}},
                      GatherCase{{SpanCodec::kInt8, 7, 17, 33}, 40, {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
                                                                     18, 19}},
                      GatherCase{{SpanCodec::kBF16, 0, 4, 64}, 16, {1, 5, 9, 15}},
                      GatherCase{{SpanCodec::kFP16, 0, 1, 33}, 5, {4}}),
    [](const ::testing::TestParamInfo<GatherCase>& info) {
      return Name(info.param.codec) + "_of" + std::to_string(info.param.num_tokens) + "_at" +
             std::to_string(info.param.index[0]);
    });

TEST(SpanCodecCudaErrorsTest, RejectsWhatEncodeBlockRejects) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  constexpr int kEntries = 4, kDim = 8;
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), 1e5f}) {
    for (const SpanCodec codec : {SpanCodec::kBF16, SpanCodec::kFP16, SpanCodec::kInt4}) {
      std::vector<float> keys(kEntries * kDim, 0.5f), values(keys.size(), -0.5f);
      values[13] = bad;
      DeviceBuffer dk, dv, kd, vd, kp, vp;
      ASSERT_OK(dk.Assign(keys.data(), keys.size() * 4));
      ASSERT_OK(dv.Assign(values.data(), values.size() * 4));
      ASSERT_OK(kd.Reserve(kEntries * kDim * 2));
      ASSERT_OK(vd.Reserve(kEntries * kDim * 2));
      ASSERT_OK(kp.Reserve(1024));
      ASSERT_OK(vp.Reserve(1024));
      SpanCodecCudaParams p;
      p.codec = codec;
      p.group_size = 4;
      p.num_layers = p.num_kv_heads = 1;
      p.num_entries = kEntries;
      p.head_dim = kDim;
      p.keys = dk.as<float>();
      p.values = dv.as<float>();
      p.token_stride = kDim;
      p.key_data = kd.as<uint8_t>();
      p.value_data = vd.as<uint8_t>();
      p.key_params = kp.as<uint16_t>();
      p.value_params = vp.as<uint16_t>();
      const bool rejected = std::isnan(bad) || codec != SpanCodec::kBF16;  // bf16 holds 1e5
      const std::vector<int32_t> positions = {0, 1, 2, 3};
      const std::vector<float> log_counts(kEntries, 0.0f);
      const auto cpu = kvcache::EncodeBlock({static_cast<kvcache::Codec>(codec), 4},
                                            {kDim, positions, log_counts, keys, values});
      EXPECT_EQ(cpu.ok(), !rejected) << "the contract itself";
      if (rejected) {
        EXPECT_THAT(EncodeSpanCuda(p, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
      } else {
        EXPECT_OK(EncodeSpanCuda(p, nullptr));
      }
    }
  }
  SpanCodecCudaParams empty;  // no shape, no pointers
  EXPECT_THAT(EncodeSpanCuda(empty, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::kernels
