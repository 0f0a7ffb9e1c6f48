#include "kvcache/span_format.h"

#include <cmath>
#include <bit>
#include <cstring>
#include <tuple>

#include "absl/strings/escaping.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using testing::RandomSpan;
using testing::RandomSpanOptions;
using testing::ResealSpanBytes;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The size formula of docs/span-format.md, written out independently of the library.
int64_t DocPayloadBytes(Codec codec, int64_t g, int64_t n, int64_t d) {
  int64_t payload;
  switch (codec) {
    case Codec::kBF16:
    case Codec::kFP16: payload = 4 * n * d; break;
    default: {
      const int64_t bits = codec == Codec::kInt8 ? 8 : codec == Codec::kInt4 ? 4 : 2;
      payload = 2 * n * CeilDiv(d * bits, 8) + 4 * (CeilDiv(n, g) * d + n * CeilDiv(d, g));
    }
  }
  return payload;
}
// Block: 10-byte header, u16 position offsets unless implicit, f32 log counts unless all 0.
// Shared block: 6-byte header, f16 key / value scales when present, own values (int:
// value rows and per-token params) when it shares keys only.
int64_t DocBlockBytes(const EntryBlock& b, int32_t first_position) {
  if (b.is_shared()) {
    const int64_t n = b.num_entries();
    int64_t own_values = 0;
    if (b.shares == BlockShares::kKeys) {
      own_values = IsQuantized(b.codec)
                       ? n * CeilDiv(int64_t{b.head_dim} * CodecBits(b.codec), 8) +
                             4 * n * CeilDiv(b.head_dim, b.group_size)
                       : 2 * n * b.head_dim;
    }
    return 6 + 2 * static_cast<int64_t>(b.key_scales.size()) +
           2 * static_cast<int64_t>(b.value_scales.size()) + own_values;
  }
  bool implicit_positions = true, zero_log_counts = true;
  for (int i = 0; i < b.num_entries(); ++i) {
    implicit_positions &= b.positions[i] == first_position + i;
    zero_log_counts &= std::bit_cast<uint32_t>(b.log_counts[i]) == 0;
  }
  const int64_t n = b.num_entries();
  return 10 + (implicit_positions ? 0 : 2 * n) + (zero_log_counts ? 0 : 4 * n) +
         DocPayloadBytes(b.codec, b.group_size, n, b.head_dim);
}
int64_t DocSpanBytes(const Span& s) {
  int64_t size = 32 + 4 + s.header.model_fingerprint.size() + 4 + s.header.policy.size() + 8;
  for (const HeadEntries& h : s.heads) {
    if (h.shared_from_layer != kNotShared) {
      size += 5;
      continue;
    }
    size += 2;
    for (const EntryBlock& b : h.blocks) {
      size += DocBlockBytes(b, s.header.first_position);
    }
  }
  return size;
}

using FormatParam = std::tuple<Codec, int, SpanGeometry>;
class SpanFormatSweepTest : public ::testing::TestWithParam<FormatParam> {};

TEST_P(SpanFormatSweepTest, RoundTripIsBitExactAndSizeMatchesDoc) {
  const auto [codec, group_size, geometry] = GetParam();
  RandomSpanOptions o;
  o.geometry = geometry;
  o.codec = {codec, group_size};
  o.span_index = 3;
  o.seed = 42 + group_size;
  o.policy = "int4:g32";
  ASSERT_OK_AND_ASSIGN(const Span span, RandomSpan(o));
  const std::string bytes = SerializeSpan(span);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), SerializedSize(span));
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), DocSpanBytes(span));
  ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(bytes));
  EXPECT_TRUE(parsed == span);
  EXPECT_EQ(SerializeSpan(parsed), bytes);
  EXPECT_EQ(DecodeBlockValues(parsed.head(0, 0).blocks[0]),
            DecodeBlockValues(span.head(0, 0).blocks[0]));
}

INSTANTIATE_TEST_SUITE_P(
    Codecs, SpanFormatSweepTest,
    ::testing::Combine(::testing::Values(Codec::kBF16, Codec::kFP16, Codec::kInt8, Codec::kInt4,
                                         Codec::kInt2),
                       ::testing::Values(1, 32, 128),
                       ::testing::Values(SpanGeometry{1, 1, 32, 16}, SpanGeometry{2, 2, 64, 64},
                                         SpanGeometry{2, 1, 128, 64},
                                         SpanGeometry{1, 3, 5, 7})));

TEST(SpanFormatTest, MixedAndSharedSpansRoundTrip) {
  RandomSpanOptions o;
  o.geometry = {3, 2, 16, 8};
  ASSERT_OK_AND_ASSIGN(Span span, RandomSpan(o));
  // Head (1, 0): mixed precision with a merged entry (count 3) and two evicted tokens.
  const std::vector<float> keys = testing::RandomFloats(6 * 16, 8, 1.0f);
  const std::vector<float> values = testing::RandomFloats(6 * 16, 9, 1.0f);
  const std::vector<int32_t> positions = {0, 1, 3, 4, 4, 7};
  const std::vector<float> log_counts = {0, 0, std::log(3.0f), 0, 0, 0};
  const std::vector<uint8_t> important = {1, 0, 1, 0, 0, 1};
  ASSERT_OK_AND_ASSIGN(span.head(1, 0),
                       EncodeMixedHead({{Codec::kFP16, 0}, {Codec::kInt2, 4}},
                                       {16, positions, log_counts, keys, values}, important));
  span.head(2, 1).blocks.clear();
  span.head(2, 1).shared_from_layer = 1;
  span.head(0, 1).blocks.clear();  // a head with every token evicted
  ASSERT_OK(ValidateSpan(span));
  const std::string bytes = SerializeSpan(span);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), DocSpanBytes(span));
  ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(bytes));
  EXPECT_TRUE(parsed == span);
  EXPECT_EQ(SerializeSpan(parsed), bytes);
}

TEST(SpanFormatTest, SharedBlocksRoundTripAsMinor1AndSizeMatchesDoc) {
  const Span span = testing::SharedBlockSpan();
  ASSERT_OK(ValidateSpan(span));
  const std::string bytes = SerializeSpan(span);
  // docs/span-format.md, by hand: header 32 + 4 + 1 + 4 + 1 + 8 = 50; an owned int2 head
  // (n 4, D 5, G 2) 2 + 10 + 2*4*2 + 4*(2*5 + 4*3) = 116; a keys-shared head 2 + 6 +
  // 4*2 + 4*4*3 = 64; the keys-and-values-shared head 2 + 6 + 2*4 + 2*4 = 24.
  EXPECT_EQ(bytes.size(), 50u + 3 * 116 + 2 * 64 + 24);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), DocSpanBytes(span));
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), SerializedSize(span));
  uint16_t minor;
  std::memcpy(&minor, bytes.data() + 6, 2);
  EXPECT_EQ(minor, kSpanVersionMinorShared);
  ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(bytes));
  EXPECT_TRUE(parsed == span);
  EXPECT_EQ(SerializeSpan(parsed), bytes);
  // A span without shared blocks is still written as (and byte-identical to) version 1.0.
  const std::string plain = SerializeSpan(RandomSpan(RandomSpanOptions{}).value());
  std::memcpy(&minor, plain.data() + 6, 2);
  EXPECT_EQ(minor, 0);
}

TEST(SpanFormatTest, CompressionRatiosAgainstBf16) {
  // A Llama-like head: head_dim 128, S = 64, group 32.
  const auto bytes_per_token = [](Codec codec) {
    RandomSpanOptions o;
    o.geometry = {4, 2, 128, 64};
    o.codec = {codec, 32};
    return BytesPerToken(RandomSpan(o).value());
  };
  const double bf16 = bytes_per_token(Codec::kBF16);
  // Per head: 2-byte head record, 10-byte block header, payload (positions implicit, log
  // counts zero: FromDense keeps every token).
  const double heads = 4 * 2;
  const double fixed = 32 + 4 + 10 + 4 + 5 + 8;  // "test-model", "dense", checksum
  EXPECT_DOUBLE_EQ(bf16, (fixed + heads * (2 + 10 + 4 * 64 * 128)) / 64);
  EXPECT_DOUBLE_EQ(bytes_per_token(Codec::kFP16), bf16);
  const double int8 = bytes_per_token(Codec::kInt8);
  const double int4 = bytes_per_token(Codec::kInt4);
  const double int2 = bytes_per_token(Codec::kInt2);
  // int4/g32: 4 bits + (2 x fp16) / 32 = 5 bits per element.
  EXPECT_DOUBLE_EQ(int4, (fixed + heads * (2 + 10 + 2 * 64 * 64 + 4 * (256 + 256))) / 64);
  EXPECT_GT(bf16 / int8, 16.0 / 9.1);  // 9 bits per element
  EXPECT_GT(bf16 / int4, 16.0 / 5.1);  // 5 bits
  EXPECT_GT(bf16 / int2, 16.0 / 3.1);  // 3 bits
}

// The worked example of docs/span-format.md: 1 layer, 1 KV head, head_dim 4, S = 2,
// int4 with group 2, span 3 of its sequence (positions 6, 7).
Span WorkedExample() {
  const std::vector<int32_t> positions = {6, 7};
  const std::vector<float> log_counts = {0.0f, 0.0f};
  const std::vector<float> keys = {0.0f, 1.0f, -1.0f, 2.0f, /**/ 1.5f, 0.5f, 1.0f, -2.0f};
  const std::vector<float> values = {0.25f, -0.5f, 0.75f, 1.0f, /**/ 3.0f, 0.0f, -3.0f, 1.5f};
  Span span;
  span.header = {"demo-model", "int4:g2", {1, 1, 4, 2}, 6, 3};
  span.heads.resize(1);
  span.heads[0].blocks.push_back(
      EncodeBlock({Codec::kInt4, 2}, {4, positions, log_counts, keys, values}).value());
  return span;
}

// Keep in sync with docs/span-format.md ("Worked example").
constexpr char kWorkedExampleHex[] =
    "4b565350010000000100000001000000040000000200000006000000030000000a00000064656d6f2d6d6f64"
    "656c07000000696e74343a6732000104030200000002000000f0f00f0f672e000045280038453000bc453400"
    "c00ff00ff0672a00b84524003a67320000cd3400c2fff84f89018faec0";

TEST(SpanFormatTest, WorkedExampleMatchesDoc) {
  const std::string bytes = SerializeSpan(WorkedExample());
  EXPECT_EQ(absl::BytesToHexString(bytes), kWorkedExampleHex);
  ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(bytes));
  EXPECT_EQ(DecodeBlockKeys(parsed.heads[0].blocks[0]),
            DecodeBlockKeys(WorkedExample().heads[0].blocks[0]));
}

TEST(SpanFormatTest, ImplicitArraysAreOmittedAndExplicitOnesKept) {
  // Span 2 of S = 4 (positions 8..11); three entries, the last standing for two tokens.
  const std::vector<float> kv = testing::RandomFloats(3 * 8, 6, 1.0f);
  const auto span_with = [&](std::vector<int32_t> positions, std::vector<float> log_counts) {
    Span span;
    span.header = {"m", "p", {1, 1, 8, 4}, 8, 2};
    span.heads.resize(1);
    span.heads[0].blocks.push_back(
        EncodeBlock({Codec::kBF16, 0}, {8, positions, log_counts, kv, kv}).value());
    EXPECT_OK(ValidateSpan(span));
    return span;
  };
  const Span implicit = span_with({8, 9, 10}, {0, 0, 0});
  const Span counted = span_with({8, 9, 10}, {0, 0, std::log(2.0f)});
  const Span gapped = span_with({8, 9, 11}, {0, 0, std::log(2.0f)});
  EXPECT_EQ(SerializedSize(counted), SerializedSize(implicit) + 3 * 4);     // f32 log counts
  EXPECT_EQ(SerializedSize(gapped), SerializedSize(counted) + 3 * 2);       // u16 offsets
  for (const Span* span : {&implicit, &counted, &gapped}) {
    const std::string bytes = SerializeSpan(*span);
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), DocSpanBytes(*span));
    ASSERT_OK_AND_ASSIGN(const Span parsed, ParseSpan(bytes));
    EXPECT_TRUE(parsed == *span);
  }
}

TEST(SpanFormatTest, UnknownMajorVersionIsUnimplemented) {
  std::string bytes = SerializeSpan(WorkedExample());
  const uint16_t major = 2;
  std::memcpy(bytes.data() + 4, &major, 2);
  ResealSpanBytes(&bytes);
  EXPECT_THAT(ParseSpan(bytes), StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(SpanFormatTest, UnknownCodecIsUnimplementedOnlyFromANewerMinor) {
  // Block codec byte: after the 32-byte fixed header, "demo-model" and "int4:g2" with their
  // lengths, the head kind and the block count.
  const size_t codec_offset = 32 + 4 + 10 + 4 + 7 + 2;
  std::string bytes = SerializeSpan(WorkedExample());
  ASSERT_EQ(bytes[codec_offset], static_cast<char>(Codec::kInt4));
  bytes[codec_offset] = 9;
  ResealSpanBytes(&bytes);
  EXPECT_THAT(ParseSpan(bytes), StatusIs(absl::StatusCode::kDataLoss));
  const uint16_t minor = kSpanVersionMinor + 1;
  std::memcpy(bytes.data() + 6, &minor, 2);
  ResealSpanBytes(&bytes);
  EXPECT_THAT(ParseSpan(bytes), StatusIs(absl::StatusCode::kUnimplemented));
  // A newer minor with nothing unknown parses.
  bytes = SerializeSpan(WorkedExample());
  std::memcpy(bytes.data() + 6, &minor, 2);
  ResealSpanBytes(&bytes);
  EXPECT_OK(ParseSpan(bytes));
}

}  // namespace
}  // namespace kvspan::kvcache
