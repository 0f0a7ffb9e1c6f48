#include "common/api_key_file.h"

#include "common/file_util.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan {
namespace {

using ::testing::ElementsAre;
using testing::StatusIs;

TEST(ApiKeyFileTest, SkipsCommentsAndEmptyLinesAndTrims) {
  absl::StatusOr<std::vector<std::string>> keys = ParseApiKeys("# ops keys\n\n  alpha \r\n#beta\nsk-123\n\n");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre("alpha", "sk-123"));
}

TEST(ApiKeyFileTest, NoKeyIsInvalidArgument) {
  EXPECT_THAT(ParseApiKeys(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseApiKeys("# only a comment\n\n   \n"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ApiKeyFileTest, KeyWithWhitespaceIsInvalidArgument) {
  EXPECT_THAT(ParseApiKeys("good\nbad key\n"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ApiKeyFileTest, LoadsAFileAndReportsAMissingOne) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFile(dir.Sub("keys"), "k1\nk2\n").ok());
  absl::StatusOr<std::vector<std::string>> keys = LoadApiKeyFile(dir.Sub("keys"));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre("k1", "k2"));
  EXPECT_THAT(LoadApiKeyFile(dir.Sub("missing")), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_TRUE(WriteFile(dir.Sub("empty"), "").ok());
  EXPECT_THAT(LoadApiKeyFile(dir.Sub("empty")), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan
