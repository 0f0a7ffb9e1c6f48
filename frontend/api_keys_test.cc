#include "frontend/api_keys.h"

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace kvspan::frontend {
namespace {

using kvspan::testing::StatusIs;

TEST(ApiKeysTest, MatchesEveryKeyAndNothingElse) {
  const ApiKeys keys({"alpha", "sk-0123456789"});
  EXPECT_TRUE(keys.Matches("alpha"));
  EXPECT_TRUE(keys.Matches("sk-0123456789"));
  EXPECT_FALSE(keys.Matches(""));
  EXPECT_FALSE(keys.Matches("alph"));     // a prefix
  EXPECT_FALSE(keys.Matches("alphaa"));   // a longer key
  EXPECT_FALSE(keys.Matches("sk-0123456788"));  // the last byte differs
  EXPECT_FALSE(keys.Matches("ALPHA"));    // keys are case-sensitive
}

TEST(ApiKeysTest, AuthorizationNeedsTheBearerScheme) {
  const ApiKeys keys({"alpha"});
  EXPECT_TRUE(keys.CheckAuthorization("Bearer alpha").ok());
  EXPECT_TRUE(keys.CheckAuthorization("bearer alpha").ok());
  EXPECT_THAT(keys.CheckAuthorization(""), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(keys.CheckAuthorization("alpha"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(keys.CheckAuthorization("Basic alpha"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(keys.CheckAuthorization("Bearer "), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(keys.CheckAuthorization("Bearer beta"), StatusIs(absl::StatusCode::kUnauthenticated));
}

}  // namespace
}  // namespace kvspan::frontend
