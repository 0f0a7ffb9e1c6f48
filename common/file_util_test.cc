#include "common/file_util.h"

#include <string>

#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gtest/gtest.h"

namespace kvspan {
namespace {

using ::kvspan::testing::StatusIs;

TEST(FileUtilTest, WriteThenReadRoundTripsAndReplaces) {
  ::kvspan::testing::TempDir dir;
  const std::string path = dir.path() + "/f.bin";
  const std::string data("a\0b\nc", 5);
  ASSERT_OK(WriteFile(path, data));
  ASSERT_OK_AND_ASSIGN(std::string got, ReadFile(path));
  EXPECT_EQ(got, data);
  ASSERT_OK(WriteFile(path, "x"));
  ASSERT_OK_AND_ASSIGN(got, ReadFile(path));
  EXPECT_EQ(got, "x");
  EXPECT_TRUE(FileExists(path));
}

TEST(FileUtilTest, ErrorsCarryTheErrnoCode) {
  ::kvspan::testing::TempDir dir;
  EXPECT_THAT(WriteFile(dir.path() + "/no/such/dir/f", "x"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ReadFile(dir.path() + "/missing").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(FileExists(dir.path() + "/missing"));
}

}  // namespace
}  // namespace kvspan
