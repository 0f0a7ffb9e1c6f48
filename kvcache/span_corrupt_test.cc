// Corrupted and truncated span bytes: every one must be DataLoss, never a crash or an
// out-of-bounds read (run under the asan preset to check the latter).
#include <cmath>
#include <cstring>
#include <functional>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/span_format.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using testing::RandomSpan;
using testing::RandomSpanOptions;
using testing::ResealSpanBytes;

// Three small spans: plain int2 with padding bits (head_dim 5), bf16 with a mixed head
// and a shared head, and SharedBlockSpan() (shared blocks of both kinds), so every kind of
// record is covered.
std::vector<std::string> SmallSpans() {
  RandomSpanOptions o;
  o.geometry = {2, 2, 5, 4};
  o.codec = {Codec::kInt2, 2};
  o.span_index = 1;
  o.model_fingerprint = "m";
  o.policy = "p";
  Span plain = RandomSpan(o).value();
  // Head (0, 0): token 6 evicted, token 5 merged with it (count 2): explicit positions
  // and log counts, so the corpus below can corrupt them.
  const std::vector<int32_t> kept = {4, 5, 7};
  const std::vector<float> kept_log_counts = {0.0f, std::log(2.0f), 0.0f};
  const std::vector<float> kept_kv = testing::RandomFloats(15, 2, 1.0f);
  plain.head(0, 0).blocks[0] =
      EncodeBlock({Codec::kInt2, 2}, {5, kept, kept_log_counts, kept_kv, kept_kv}).value();
  std::vector<std::string> out = {SerializeSpan(plain)};
  o.codec = {Codec::kBF16, 0};
  Span span = RandomSpan(o).value();
  const std::vector<int32_t> positions = {4, 6, 7};
  const std::vector<float> log_counts = {0.0f, 0.5f, 0.0f};
  const std::vector<float> kv = testing::RandomFloats(15, 3, 1.0f);
  span.head(0, 1) = EncodeMixedHead({{Codec::kInt8, 2}, {Codec::kInt4, 2}},
                                    {5, positions, log_counts, kv, kv}, std::vector<uint8_t>{1, 0, 1})
                        .value();
  span.head(1, 1).blocks.clear();
  span.head(1, 1).shared_from_layer = 0;
  out.push_back(SerializeSpan(span));
  out.push_back(SerializeSpan(testing::SharedBlockSpan()));  // shared blocks, minor 1
  for (const std::string& s : out) EXPECT_OK(ParseSpan(s));
  return out;
}

TEST(SpanCorruptTest, EveryFlippedByteIsDataLoss) {
  for (const std::string& good : SmallSpans()) {
    for (size_t i = 0; i < good.size(); ++i) {
      for (const uint8_t mask : {0x01, 0x80, 0xff}) {
        std::string bad = good;
        bad[i] = static_cast<char>(bad[i] ^ mask);
        EXPECT_THAT(ParseSpan(bad), StatusIs(absl::StatusCode::kDataLoss))
            << "byte " << i << " mask " << int{mask};
      }
    }
  }
}

TEST(SpanCorruptTest, EveryTruncationAndExtensionIsDataLoss) {
  for (const std::string& good : SmallSpans()) {
    for (size_t len = 0; len < good.size(); ++len) {
      // A fresh heap copy of exactly `len` bytes, so ASan catches a read past the end.
      const std::string bad = good.substr(0, len);
      EXPECT_THAT(ParseSpan(bad), StatusIs(absl::StatusCode::kDataLoss)) << "length " << len;
    }
    EXPECT_THAT(ParseSpan(good + '\0'), StatusIs(absl::StatusCode::kDataLoss));
  }
}

// Offsets in SmallSpans()[0]: 32-byte fixed header, "m", "p" with their u32 lengths.
constexpr size_t kHeadsAt = 32 + 4 + 1 + 4 + 1;      // first head record: kind
constexpr size_t kBlockAt = kHeadsAt + 2;            // its block: codec
constexpr size_t kFlagsAt = kBlockAt + 1;            // u8 flags
constexpr size_t kGroupAt = kFlagsAt + 1;            // u32 group_size
constexpr size_t kCountAt = kGroupAt + 4;            // u32 num_entries (3)
constexpr size_t kPositionsAt = kCountAt + 4;        // u16 position offsets[3]
constexpr size_t kLogCountsAt = kPositionsAt + 6;    // f32 log_counts[3]
constexpr size_t kKeyDataAt = kLogCountsAt + 12;     // int2 rows, 2 bytes each

template <typename T>
std::function<void(std::string&)> Set(size_t offset, T value) {
  return [=](std::string& b) { std::memcpy(b.data() + offset, &value, sizeof(T)); };
}

struct BadBuffer {
  const char* name;
  std::function<void(std::string&)> edit;
  const char* reason;  // a substring of the expected DataLoss message
  int base = 0;        // which of SmallSpans() it edits
};

// The shared head (1, 1) of SmallSpans()[1] is its last record: kind, u32 source layer.
void SetSharedSource(std::string& b, uint32_t layer) {
  const size_t at = b.size() - kSpanChecksumBytes - 4;
  ASSERT_EQ(b[at - 1], static_cast<char>(kHeadKindShared));
  std::memcpy(b.data() + at, &layer, 4);
}

// The shared block of head (2, 1), the last record of SmallSpans()[2] (SharedBlockSpan):
// codec byte, flags, u32 source layer, 4 key scales, 4 value scales.
size_t SharedBlockAt(const std::string& b) { return b.size() - kSpanChecksumBytes - 22; }
template <typename T>
std::function<void(std::string&)> SetShared(size_t offset, T value) {
  return [=](std::string& b) { std::memcpy(b.data() + SharedBlockAt(b) + offset, &value, sizeof(T)); };
}

// Hand-crafted bad buffers, each resealed with a valid checksum so the structural checks
// behind the checksum are what rejects them.
std::vector<BadBuffer> BadCorpus() {
  return {
      {"bad_magic", Set<char>(0, 'X'), "bad magic"},
      {"zero_layers", Set<uint32_t>(8, 0), "num_layers = 0"},
      {"absurd_layers", Set<uint32_t>(8, 0xffffffffu), "num_layers = 4294967295"},
      {"zero_kv_heads", Set<uint32_t>(12, 0), "num_kv_heads = 0"},
      {"head_table_larger_than_buffer",
       [](std::string& b) {
         Set<uint32_t>(8, kMaxLayers)(b);
         Set<uint32_t>(12, kMaxKvHeads)(b);
       },
       "head table"},
      {"head_dim_too_large", Set<uint32_t>(16, kMaxHeadDim + 1), "head_dim = 4097"},
      {"head_dim_disagrees_with_payload", Set<uint32_t>(16, 4), "span: "},
      {"zero_span_tokens", Set<uint32_t>(20, 0), "span_tokens = 0"},
      {"span_tokens_too_small_for_entries", Set<uint32_t>(20, 2), "num_entries = 3"},
      {"first_position_overflows", Set<uint32_t>(24, 0x7ffffffeu), "first_position"},
      {"first_position_negative", Set<uint32_t>(24, 0x80000000u), "first_position"},
      {"span_index_negative", Set<uint32_t>(28, 0xffffffffu), "span_index"},
      {"fingerprint_length_absurd", Set<uint32_t>(32, 0xfffffff0u), "fingerprint length"},
      {"fingerprint_length_over_limit", Set<uint32_t>(32, kMaxLabelBytes + 1),
       "fingerprint length"},
      {"fingerprint_length_past_end", Set<uint32_t>(32, 4000), "oversized fingerprint"},
      {"policy_length_absurd", Set<uint32_t>(37, 0x7fffffffu), "policy length"},
      {"unknown_head_kind", Set<uint8_t>(kHeadsAt, 7), "unknown head kind 7"},
      {"too_many_blocks", Set<uint8_t>(kHeadsAt + 1, kMaxBlocksPerHead + 1), "5 blocks"},
      {"codec_zero", Set<uint8_t>(kBlockAt, 0), "unknown codec id 0"},
      {"codec_unknown", Set<uint8_t>(kBlockAt, 200), "unknown codec id 200"},
      {"codec_changed_to_bf16", Set<uint8_t>(kBlockAt, static_cast<uint8_t>(Codec::kBF16)),
       "group_size of a 16-bit codec"},
      {"group_size_zero", Set<uint32_t>(kGroupAt, 0), "group_size = 0"},
      {"group_size_absurd", Set<uint32_t>(kGroupAt, 0xffffffffu), "group_size = 4294967295"},
      {"group_size_changed", Set<uint32_t>(kGroupAt, 1), "span: "},
      {"entries_beyond_geometry", Set<uint32_t>(kCountAt, 5), "num_entries = 5"},
      {"entries_absurd", Set<uint32_t>(kCountAt, 0xffffffffu), "num_entries = 4294967295"},
      {"entries_fewer", Set<uint32_t>(kCountAt, 2), "span: "},
      {"unknown_block_flag", Set<uint8_t>(kFlagsAt, 0x80), "unknown block flags 128"},
      {"implicit_positions_flag_on_gapped_block", Set<uint8_t>(kFlagsAt, kBlockImplicitPositions),
       ""},  // misaligns every later field: any DataLoss
      {"redundant_explicit_positions", Set<uint16_t>(kPositionsAt + 4, 2), "non-canonical"},
      {"redundant_explicit_log_counts", Set<float>(kLogCountsAt + 4, 0.0f), "non-canonical"},
      {"position_after_span", Set<uint16_t>(kPositionsAt + 4, 4), "position offset 4"},
      {"position_offset_absurd", Set<uint16_t>(kPositionsAt + 4, 0xffff), "position offset"},
      {"positions_decrease", Set<uint16_t>(kPositionsAt + 4, 0), "positions decrease"},
      {"log_count_nan", Set<uint32_t>(kLogCountsAt, 0x7fc00000u), "log_count nan"},
      {"log_count_inf", Set<float>(kLogCountsAt, INFINITY), "log_count inf"},
      {"log_count_negative", Set<float>(kLogCountsAt + 4, -0.25f), "log_count -0.25"},
      {"log_count_negative_zero", Set<float>(kLogCountsAt + 4, -0.0f), "log_count -0 "},
      {"counts_exceed_span", Set<float>(kLogCountsAt + 4, 2.0f), "stand for"},  // e^2 + 2 > 4
      {"padding_bits_set", Set<uint8_t>(kKeyDataAt + 1, 0xfc), "padding bits"},
      {"trailing_bytes",
       [](std::string& b) { b.insert(b.size() - kSpanChecksumBytes, "\x01\x02\x03", 3); },
       "3 trailing bytes"},
      {"missing_last_byte",
       [](std::string& b) { b.erase(b.size() - kSpanChecksumBytes - 1, 1); }, "truncated"},
      {"shared_from_same_layer", [](std::string& b) { SetSharedSource(b, 1); },
       "shares layer 1, which is not an earlier layer", 1},
      {"shared_from_later_layer", [](std::string& b) { SetSharedSource(b, 5); },
       "shares layer 5, which is not an earlier layer", 1},
      {"shared_from_absurd_layer", [](std::string& b) { SetSharedSource(b, 0xffffffffu); },
       "shared source layer", 1},
      // Shared blocks (minor 1).
      {"shared_block_in_minor_0_span", Set<uint16_t>(6, 0), "shared block in a span of minor "
       "version 0", 2},
      {"shared_block_codec_byte", SetShared<uint8_t>(0, 3), "shared block with codec byte 3", 2},
      {"shared_block_unknown_flag", SetShared<uint8_t>(1, 0x3c | 0x40),
       "unknown shared block flags", 2},
      {"shared_block_position_flag", SetShared<uint8_t>(1, 0x3c | kBlockImplicitPositions),
       "unknown shared block flags", 2},
      {"shared_block_value_scales_with_own_values",
       SetShared<uint8_t>(1, kBlockShared | kBlockKeyScales | kBlockValueScales),
       "value scales on a shared block that owns its values", 2},
      {"shared_block_own_values_truncated", SetShared<uint8_t>(1, kBlockShared | kBlockKeyScales),
       "truncated or oversized shared block values", 2},
      {"shared_block_scales_missing", SetShared<uint8_t>(1, kBlockShared | kBlockSharesValues),
       "trailing bytes", 2},
      {"shared_block_from_own_layer", SetShared<uint32_t>(2, 2),
       "shared block source layer = 2 is outside [0, 1]", 2},
      {"shared_block_from_absurd_layer", SetShared<uint32_t>(2, 0xffffffffu),
       "shared block source layer", 2},
      {"shared_block_chain", SetShared<uint32_t>(2, 1), "no owned source block in layer 1", 2},
      {"shared_block_scale_nan", SetShared<uint16_t>(6, 0x7e00), "scale nan", 2},
      {"shared_block_scale_inf", SetShared<uint16_t>(6, 0x7c00), "scale inf", 2},
      {"shared_block_scale_negative", SetShared<uint16_t>(8, 0xbc00), "scale -1", 2},
      {"shared_block_scale_negative_zero", SetShared<uint16_t>(12, 0x8000), "scale -0", 2},
      {"shared_block_value_scale_negative", SetShared<uint16_t>(14, 0xc000), "scale -2", 2},
      {"shared_block_scales_all_one",
       [](std::string& b) {
         for (int i = 0; i < 4; ++i) SetShared<uint16_t>(6 + 2 * i, 0x3c00)(b);
       },
       "scales all 1", 2},
  };
}

TEST(SpanCorruptTest, CraftedBadBuffersWithValidChecksumsAreDataLoss) {
  const std::vector<std::string> good = SmallSpans();
  for (const BadBuffer& bad : BadCorpus()) {
    SCOPED_TRACE(bad.name);
    std::string bytes = good[bad.base];
    bad.edit(bytes);
    ASSERT_NE(bytes, good[bad.base]);
    ResealSpanBytes(&bytes);
    EXPECT_THAT(ParseSpan(bytes), StatusIs(absl::StatusCode::kDataLoss,
                                           ::testing::HasSubstr(bad.reason)));
  }
}

TEST(SpanCorruptTest, CorpusOffsetsPointAtTheFieldsTheyName) {
  // Guards the corpus above: if the layout moved, the edits would hit the wrong bytes.
  const std::string good = SmallSpans()[0];
  uint32_t group, count;
  uint16_t offsets[3];
  float log_counts[3];
  std::memcpy(&group, good.data() + kGroupAt, 4);
  std::memcpy(&count, good.data() + kCountAt, 4);
  std::memcpy(offsets, good.data() + kPositionsAt, 6);
  std::memcpy(log_counts, good.data() + kLogCountsAt, 12);
  EXPECT_EQ(good[kHeadsAt], static_cast<char>(kHeadKindOwned));
  EXPECT_EQ(good[kBlockAt], static_cast<char>(Codec::kInt2));
  EXPECT_EQ(good[kFlagsAt], 0);
  EXPECT_EQ(group, 2u);
  EXPECT_EQ(count, 3u);
  EXPECT_THAT(offsets, ::testing::ElementsAre(0, 1, 3));
  EXPECT_THAT(log_counts, ::testing::ElementsAre(0.0f, std::log(2.0f), 0.0f));
  // head_dim 5 at 2 bits: the second byte of a row has 6 padding bits.
  EXPECT_EQ(static_cast<uint8_t>(good[kKeyDataAt + 1]) & 0xfc, 0);

  const std::string shared = SmallSpans()[2];
  const size_t at = SharedBlockAt(shared);
  uint16_t minor, key_scale1, value_scale3;
  uint32_t source;
  std::memcpy(&minor, shared.data() + 6, 2);
  std::memcpy(&source, shared.data() + at + 2, 4);
  std::memcpy(&key_scale1, shared.data() + at + 8, 2);
  std::memcpy(&value_scale3, shared.data() + at + 20, 2);
  EXPECT_EQ(minor, kSpanVersionMinorShared);
  EXPECT_EQ(shared[at - 2], static_cast<char>(kHeadKindOwned));
  EXPECT_EQ(shared[at - 1], 1);  // num_blocks
  EXPECT_EQ(shared[at], static_cast<char>(kSharedBlockCodecByte));
  EXPECT_EQ(static_cast<uint8_t>(shared[at + 1]),
            kBlockShared | kBlockSharesValues | kBlockKeyScales | kBlockValueScales);
  EXPECT_EQ(source, 0u);
  EXPECT_EQ(key_scale1, 0x4000);
  EXPECT_EQ(value_scale3, 0x3400);
}

TEST(SpanCorruptTest, ShortBuffersOfAnyContentAreDataLoss) {
  EXPECT_THAT(ParseSpan(""), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ParseSpan(std::string(47, '\0')), StatusIs(absl::StatusCode::kDataLoss));
  std::string zeros(64, '\0');
  ResealSpanBytes(&zeros);
  EXPECT_THAT(ParseSpan(zeros), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace kvspan::kvcache
