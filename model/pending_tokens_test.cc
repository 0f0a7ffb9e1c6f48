#include "model/pending_tokens.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

TEST(PendingTokensTest, CheckNeedsEveryLayerToTakeExactlyN) {
  PendingTokens p(3);
  EXPECT_EQ(p.num_layers(), 3);
  EXPECT_OK(p.Check(0, "C"));  // nothing appended: Commit(0) would be consistent
  p.Append(0, 2);
  p.Append(2, 2);
  EXPECT_THAT(p.Check(2, "MyCache"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("MyCache: Commit(2) but layer 1 has 0 pending tokens")));
  p.Append(1, 2);
  EXPECT_OK(p.Check(2, "C"));
  EXPECT_THAT(p.Check(1, "C"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("layer 0 has 2")));
}

TEST(PendingTokensTest, AppendingAgainReplacesTheLayersCount) {
  PendingTokens p(2);
  p.Append(0, 5);
  p.Append(1, 5);
  p.Append(0, 1);  // layer 0's step re-run with one token
  EXPECT_EQ(p.count(0), 1);
  EXPECT_EQ(p.count(1), 5);
  EXPECT_THAT(p.Check(5, "C"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("layer 0 has 1")));
}

TEST(PendingTokensTest, ClearDropsEveryCount) {
  PendingTokens p(2);
  p.Append(0, 3);
  p.Append(1, 3);
  p.Clear();
  EXPECT_EQ(p.count(0), 0);
  EXPECT_EQ(p.count(1), 0);
  EXPECT_THAT(p.Check(3, "C"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// A preparation holds for its n only, until the next Append or Clear.
TEST(PendingTokensTest, PreparedUntilTheNextAppendOrClear) {
  PendingTokens p(2);
  p.Append(0, 4);
  p.Append(1, 4);
  EXPECT_FALSE(p.prepared(4));
  ASSERT_OK(p.Check(4, "C"));
  p.MarkPrepared(4);
  EXPECT_TRUE(p.prepared(4));
  EXPECT_FALSE(p.prepared(3));
  p.Append(1, 4);  // the layer re-ran: the staged work is stale
  EXPECT_FALSE(p.prepared(4));
  p.MarkPrepared(4);
  p.Clear();
  EXPECT_FALSE(p.prepared(4));
  EXPECT_FALSE(p.prepared(0));
}

}  // namespace
}  // namespace kvspan::model
