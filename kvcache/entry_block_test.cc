#include "kvcache/entry_block.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/float16.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using testing::Bf16Exact;
using testing::RandomFloats;

struct Entries {
  int head_dim;
  std::vector<int32_t> positions;
  std::vector<float> log_counts, keys, values;
  DenseEntries view() const { return {head_dim, positions, log_counts, keys, values}; }
};

Entries MakeEntries(int n, int head_dim, uint64_t seed, Bf16Exact exact = Bf16Exact::kNo) {
  Entries e{head_dim, {}, std::vector<float>(n, 0.0f),
            RandomFloats(int64_t{n} * head_dim, seed, 1.5f, exact),
            RandomFloats(int64_t{n} * head_dim, seed + 17, 0.7f, exact)};
  e.positions.resize(n);
  std::iota(e.positions.begin(), e.positions.end(), 100);
  return e;
}

// Codec x group size x head_dim x entries.
using SweepParam = std::tuple<Codec, int, int, int>;

class CodecSweepTest : public ::testing::TestWithParam<SweepParam> {};

// For a quantized block: the (scale, zero) of key element (e, d) / value element (e, d).
std::pair<float, float> KeyParams(const EntryBlock& b, int e, int d) {
  const int64_t i = 2 * (int64_t{e / b.group_size} * b.head_dim + d);
  return {HalfToFloat(b.key_params[i]), HalfToFloat(b.key_params[i + 1])};
}
std::pair<float, float> ValueParams(const EntryBlock& b, int e, int d) {
  const int64_t groups = (b.head_dim + b.group_size - 1) / b.group_size;
  const int64_t i = 2 * (e * groups + d / b.group_size);
  return {HalfToFloat(b.value_params[i]), HalfToFloat(b.value_params[i + 1])};
}

// |x - x̂| <= scale / 2 plus one fp32 rounding of x̂ and the double-precision code choice.
void ExpectWithinQuantBound(float x, float got, float scale, float zero, const char* what) {
  const double bound = 0.5 * scale * (1 + 1e-6) + 0x1p-23 * (std::fabs(x) + std::fabs(zero));
  EXPECT_LE(std::fabs(static_cast<double>(x) - got), bound) << what << " x=" << x;
}

// The scale must come from the group's range, not be inflated: (max - zero) / (levels-1)
// rounded up to fp16, with zero the min rounded down to fp16.
void ExpectScaleTight(float scale, float zero, float lo, float hi, int levels) {
  EXPECT_LE(zero, lo);
  EXPECT_GE(zero, lo - (std::fabs(lo) * 0x1p-10f + 0x1p-24f));
  const double want = (static_cast<double>(hi) - zero) / (levels - 1);
  EXPECT_GE(scale, want);
  EXPECT_LE(scale, want * (1 + 0x1p-10) + 0x1p-24);
}

TEST_P(CodecSweepTest, RoundTripWithinStatedBound) {
  const auto [codec, group_size, head_dim, n] = GetParam();
  const Entries in = MakeEntries(n, head_dim, 1000 + n * 7 + head_dim);
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({codec, group_size}, in.view()));
  ASSERT_OK(ValidateBlock(b));
  EXPECT_EQ(b.num_entries(), n);
  EXPECT_EQ(b.positions, in.positions);
  const std::vector<float> keys = DecodeBlockKeys(b);
  const std::vector<float> values = DecodeBlockValues(b);
  ASSERT_EQ(keys.size(), in.keys.size());
  ASSERT_EQ(values.size(), in.values.size());
  const int levels = 1 << CodecBits(codec);
  for (int e = 0; e < n; ++e) {
    for (int d = 0; d < head_dim; ++d) {
      const size_t i = size_t(e) * head_dim + d;
      if (codec == Codec::kBF16) {
        EXPECT_EQ(keys[i], Bf16ToFloat(FloatToBf16(in.keys[i])));
        EXPECT_LE(std::fabs(keys[i] - in.keys[i]), std::fabs(in.keys[i]) * 0x1p-8f);  // half a bf16 ulp
        EXPECT_EQ(values[i], Bf16ToFloat(FloatToBf16(in.values[i])));
      } else if (codec == Codec::kFP16) {
        EXPECT_LE(std::fabs(keys[i] - in.keys[i]), std::fabs(in.keys[i]) * 0x1p-11f + 0x1p-25f);
        EXPECT_LE(std::fabs(values[i] - in.values[i]),
                  std::fabs(in.values[i]) * 0x1p-11f + 0x1p-25f);
      } else {
        const auto [ks, kz] = KeyParams(b, e, d);
        ExpectWithinQuantBound(in.keys[i], keys[i], ks, kz, "key");
        const auto [vs, vz] = ValueParams(b, e, d);
        ExpectWithinQuantBound(in.values[i], values[i], vs, vz, "value");
      }
    }
  }
  if (!IsQuantized(codec)) return;
  // Keys: groups of G entries per channel; values: groups of G channels per entry (KIVI).
  for (int e0 = 0; e0 < n; e0 += group_size) {
    for (int d = 0; d < head_dim; ++d) {
      float lo = in.keys[size_t(e0) * head_dim + d], hi = lo;
      for (int e = e0; e < std::min(n, e0 + group_size); ++e) {
        lo = std::min(lo, in.keys[size_t(e) * head_dim + d]);
        hi = std::max(hi, in.keys[size_t(e) * head_dim + d]);
      }
      const auto [s, z] = KeyParams(b, e0, d);
      ExpectScaleTight(s, z, lo, hi, levels);
    }
  }
  for (int e = 0; e < n; ++e) {
    for (int d0 = 0; d0 < head_dim; d0 += group_size) {
      const float* row = in.values.data() + size_t(e) * head_dim;
      const int d1 = std::min(head_dim, d0 + group_size);
      const float lo = *std::min_element(row + d0, row + d1);
      const float hi = *std::max_element(row + d0, row + d1);
      const auto [s, z] = ValueParams(b, e, d0);
      ExpectScaleTight(s, z, lo, hi, levels);
    }
  }
}

TEST_P(CodecSweepTest, PayloadSizeMatchesFormula) {
  const auto [codec, group_size, head_dim, n] = GetParam();
  const Entries in = MakeEntries(n, head_dim, 5);
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({codec, group_size}, in.view()));
  // docs/span-format.md: rows of ceil(D*B/8) bytes; 4 bytes per (scale, zero) group.
  const int64_t bits = CodecBits(codec);
  const int64_t rows = 2 * int64_t{n} * ((head_dim * bits + 7) / 8);
  const int64_t groups = IsQuantized(codec)
                             ? ((n + group_size - 1) / group_size) * head_dim +
                                   int64_t{n} * ((head_dim + group_size - 1) / group_size)
                             : 0;
  EXPECT_EQ(PayloadBytes(codec, b.group_size, n, head_dim), rows + 4 * groups);
  EXPECT_EQ(int64_t(b.key_data.size() + b.value_data.size() +
                    2 * (b.key_params.size() + b.value_params.size())),
            rows + 4 * groups);
}

INSTANTIATE_TEST_SUITE_P(
    AllCodecs, CodecSweepTest,
    ::testing::Combine(::testing::Values(Codec::kBF16, Codec::kFP16, Codec::kInt8,
                                         Codec::kInt4, Codec::kInt2),
                       ::testing::Values(1, 16, 32, 64, 128), ::testing::Values(32, 64, 128),
                       ::testing::Values(1, 37, 64)),
    [](const ::testing::TestParamInfo<SweepParam>& info) {
      return std::string(CodecName(std::get<0>(info.param))) + "_g" +
             std::to_string(std::get<1>(info.param)) + "_d" +
             std::to_string(std::get<2>(info.param)) + "_n" +
             std::to_string(std::get<3>(info.param));
    });

TEST(EntryBlockTest, Bf16InputsRoundTripExactlyThroughBf16) {
  const Entries in = MakeEntries(64, 128, 3, Bf16Exact::kYes);
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({Codec::kBF16, 0}, in.view()));
  EXPECT_EQ(DecodeBlockKeys(b), in.keys);
  EXPECT_EQ(DecodeBlockValues(b), in.values);
  EXPECT_EQ(b.group_size, 0);  // ignored for 16-bit codecs
}

TEST(EntryBlockTest, Int4PacksLowNibbleFirst) {
  // Channel ranges [0, 15] per key group: codes equal the values.
  Entries in{4, {0, 1, 2}, {0, 0, 0},
             {0, 0, 0, 0, /**/ 1, 2, 3, 4, /**/ 15, 15, 15, 15},
             {0, 1, 2, 15, /**/ 0, 1, 2, 15, /**/ 0, 1, 2, 15}};
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({Codec::kInt4, 4}, in.view()));
  ASSERT_EQ(b.key_data.size(), 6u);
  EXPECT_EQ(b.key_data[2], 0x21);
  EXPECT_EQ(b.key_data[3], 0x43);
  EXPECT_EQ(b.key_data[4], 0xff);
  EXPECT_EQ(b.value_data[0], 0x10);
  EXPECT_EQ(b.value_data[1], 0xf2);
  EXPECT_EQ(DecodeBlockKeys(b), in.keys);
  EXPECT_EQ(DecodeBlockValues(b), in.values);
}

TEST(EntryBlockTest, Int2PacksFourPerByteAndZeroesPadding) {
  Entries in{5, {0, 1, 2}, {0, 0, 0},
             {0, 0, 0, 0, 0, /**/ 1, 2, 3, 0, 2, /**/ 3, 3, 3, 3, 3},
             {0, 1, 2, 3, 1, /**/ 0, 1, 2, 3, 1, /**/ 0, 1, 2, 3, 1}};
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({Codec::kInt2, 8}, in.view()));
  ASSERT_EQ(b.key_data.size(), 6u);  // 2 bytes per row: 10 bits used, 6 padding bits zero
  EXPECT_EQ(b.key_data[2], 0x39);    // 1 | 2 << 2 | 3 << 4 | 0 << 6
  EXPECT_EQ(b.key_data[3], 0x02);
  EXPECT_EQ(b.value_data[0], 0xe4);  // 0 | 1 << 2 | 2 << 4 | 3 << 6
  EXPECT_EQ(DecodeBlockKeys(b), in.keys);
  EXPECT_EQ(DecodeBlockValues(b), in.values);
}

TEST(EntryBlockTest, ConstantGroupDecodesExactly) {
  Entries in{3, {5, 6}, {0, 0}, {0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f},
             {-2.0f, -2.0f, -2.0f, -2.0f, -2.0f, -2.0f}};
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({Codec::kInt2, 32}, in.view()));
  for (float k : DecodeBlockKeys(b)) EXPECT_NEAR(k, 0.3f, 0.3f * 0x1p-10f);
  for (float v : DecodeBlockValues(b)) EXPECT_EQ(v, -2.0f);  // -2 is exact in fp16
}

TEST(EntryBlockTest, EmptyBlockIsValid) {
  Entries in{8, {}, {}, {}, {}};
  ASSERT_OK_AND_ASSIGN(EntryBlock b, EncodeBlock({Codec::kInt4, 32}, in.view()));
  EXPECT_EQ(b.num_entries(), 0);
  EXPECT_TRUE(b.key_params.empty());
  EXPECT_TRUE(DecodeBlockKeys(b).empty());
}

TEST(EntryBlockTest, EncodeRejectsBadInputs) {
  const auto invalid = [](const CodecSpec& spec, const Entries& e) {
    EXPECT_THAT(EncodeBlock(spec, e.view()), StatusIs(absl::StatusCode::kInvalidArgument));
  };
  const Entries ok = MakeEntries(4, 8, 9);
  invalid({Codec::kInt4, 0}, ok);
  invalid({Codec::kInt8, kMaxGroupSize + 1}, ok);
  invalid({static_cast<Codec>(0), 32}, ok);
  invalid({static_cast<Codec>(6), 32}, ok);
  Entries e = ok;
  e.head_dim = 0;
  invalid({Codec::kBF16, 0}, e);
  e = ok;
  e.keys.pop_back();
  invalid({Codec::kBF16, 0}, e);
  e = ok;
  e.log_counts.pop_back();
  invalid({Codec::kBF16, 0}, e);
  e = ok;
  e.keys[3] = std::nanf("");
  invalid({Codec::kBF16, 0}, e);
  e = ok;
  e.values[1] = INFINITY;
  invalid({Codec::kInt8, 32}, e);
  e = ok;
  e.values[1] = 70000.0f;  // beyond fp16: rejected by fp16 and the quantizers, fine in bf16
  invalid({Codec::kFP16, 0}, e);
  invalid({Codec::kInt2, 2}, e);
  EXPECT_OK(EncodeBlock({Codec::kBF16, 0}, e.view()));
  e = ok;
  e.log_counts[2] = -0.5f;
  invalid({Codec::kInt4, 32}, e);
  e = ok;
  e.log_counts[2] = std::nanf("");
  invalid({Codec::kInt4, 32}, e);
  e = ok;
  std::swap(e.positions[0], e.positions[1]);
  invalid({Codec::kInt4, 32}, e);
}

TEST(EntryBlockTest, ValidateRejectsInconsistentBlocks) {
  const Entries in = MakeEntries(6, 5, 11);  // head_dim 5: int4 rows have 4 padding bits
  ASSERT_OK_AND_ASSIGN(const EntryBlock good, EncodeBlock({Codec::kInt4, 4}, in.view()));
  ASSERT_OK(ValidateBlock(good));
  const auto invalid = [](const EntryBlock& b) {
    EXPECT_THAT(ValidateBlock(b), StatusIs(absl::StatusCode::kInvalidArgument));
  };
  EntryBlock b = good;
  b.key_data[2] |= 0x80;  // padding nibble of row 0
  invalid(b);
  b = good;
  b.value_params[0] = 0xbc00;  // scale -1
  invalid(b);
  b = good;
  b.key_params[1] = 0x7c00;  // zero +inf
  invalid(b);
  b = good;
  b.value_params.pop_back();
  invalid(b);
  b = good;
  b.group_size = 0;
  invalid(b);
  b = good;
  b.codec = Codec::kBF16;  // group_size must be 0 and sizes differ
  invalid(b);
  ASSERT_OK_AND_ASSIGN(EntryBlock f, EncodeBlock({Codec::kFP16, 0}, in.view()));
  f.key_data[0] = 0x00;
  f.key_data[1] = 0x7e;  // fp16 NaN
  invalid(f);
}

}  // namespace
}  // namespace kvspan::kvcache
