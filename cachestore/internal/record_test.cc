#include "cachestore/internal/record.h"

#include "cachestore/key_scheme.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore::internal {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

std::string RecordOf(const std::string& payload) {
  return payload + EncodeRecordTrailer(payload.size(), ValueChecksum(payload));
}

TEST(RecordTest, RoundTrip) {
  const std::string record = RecordOf("span bytes");
  ASSERT_EQ(record.size(), 10 + kRecordTrailerBytes);
  ASSERT_OK_AND_ASSIGN(RecordView view, ParseRecord(record));
  EXPECT_EQ(view.payload, "span bytes");
  EXPECT_EQ(view.checksum, ValueChecksum("span bytes"));
  // The trailer's exact bytes: magic "KVSC", version 1, flags 0, length 10, checksum.
  EXPECT_EQ(record.substr(10, 8), std::string("KVSC\x01\x00\x00\x00", 8));
  EXPECT_EQ(record.substr(18, 8), std::string("\x0a\x00\x00\x00\x00\x00\x00\x00", 8));
}

TEST(RecordTest, EveryMalformationIsDataLoss) {
  const std::string good = RecordOf("0123456789");
  EXPECT_THAT(ParseRecord("short"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("shorter")));
  std::string bad_magic = good;
  bad_magic[10] = 'X';
  EXPECT_THAT(ParseRecord(bad_magic), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
  std::string bad_version = good;
  bad_version[14] = 2;
  EXPECT_THAT(ParseRecord(bad_version), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("version")));
  EXPECT_THAT(ParseRecord("x" + good), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("payload bytes")));
  std::string flipped = good;
  flipped[3] ^= 1;
  EXPECT_THAT(ParseRecord(flipped), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
}

TEST(EntryMetaTest, RoundTripAndMalformed) {
  EntryMeta meta{12345, 678, true};
  ASSERT_OK_AND_ASSIGN(EntryMeta back, DecodeEntryMeta(EncodeEntryMeta(meta)));
  EXPECT_EQ(back.record_bytes, 12345);
  EXPECT_EQ(back.access_tick, 678u);
  EXPECT_TRUE(back.pinned);
  EXPECT_THAT(DecodeEntryMeta("abc"), StatusIs(absl::StatusCode::kDataLoss));
  std::string bad_flag = EncodeEntryMeta(meta);
  bad_flag[16] = 7;
  EXPECT_THAT(DecodeEntryMeta(bad_flag), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace kvspan::cachestore::internal
