// GoogleMock matchers for absl::Status and absl::StatusOr (Abseil 20220623 has none).
//   EXPECT_THAT(s, IsOk());
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab")));
//   ASSERT_OK_AND_ASSIGN(auto model, Model::Load(dir));
// Test-only: link kvspan::common_testing.
#ifndef KVSPAN_COMMON_STATUS_MATCHERS_H_
#define KVSPAN_COMMON_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"

namespace kvspan::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) { return s.status(); }

MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::kvspan::testing::GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s;
  return s.ok();
}

MATCHER_P(StatusIs, code, "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = ::kvspan::testing::GetStatus(arg);
  *result_listener << "status: " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + absl::StatusCodeToString(code) + " and a matching message") {
  const absl::Status& s = ::kvspan::testing::GetStatus(arg);
  *result_listener << "status: " << s;
  return s.code() == code &&
         ::testing::Matches(message_matcher)(std::string(s.message()));
}

}  // namespace kvspan::testing

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::kvspan::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::kvspan::testing::IsOk())
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                                                   \
  KVSPAN_ASSERT_OK_AND_ASSIGN_IMPL_(KVSPAN_CONCAT_(kvspan_statusor_, __LINE__), lhs, expr)
#define KVSPAN_ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                      \
  ASSERT_TRUE(statusor.ok()) << statusor.status();             \
  lhs = std::move(statusor).value()

#endif  // KVSPAN_COMMON_STATUS_MATCHERS_H_
