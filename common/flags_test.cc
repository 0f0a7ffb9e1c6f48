#include "common/flags.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

struct Parsed {
  std::string model = "models/x";
  int max_tokens = 16;
  double temperature = 1.0;
  bool stream = true;
  std::vector<std::string> stops;
};

absl::Status ParseInto(Parsed* p, std::vector<const char*> args, FlagSet* out = nullptr) {
  FlagSet flags("kvspan test", "A test.");
  flags.Add("model", &p->model, "model dir");
  flags.Add("max-tokens", &p->max_tokens, "count");
  flags.Add("temperature", &p->temperature, "temperature");
  flags.Add("stream", &p->stream, "stream");
  flags.Add("stop", &p->stops, "stop string");
  args.insert(args.begin(), "test");
  absl::Status s = flags.Parse(static_cast<int>(args.size()), args.data());
  if (out != nullptr) *out = flags;
  return s;
}

TEST(FlagSetTest, ParsesBothForms) {
  Parsed p;
  ASSERT_OK(ParseInto(&p, {"--model=m", "--max-tokens", "7", "--temperature=0.5", "--no-stream",
                           "--stop", "a", "--stop=b"}));
  EXPECT_EQ(p.model, "m");
  EXPECT_EQ(p.max_tokens, 7);
  EXPECT_DOUBLE_EQ(p.temperature, 0.5);
  EXPECT_FALSE(p.stream);
  EXPECT_THAT(p.stops, ::testing::ElementsAre("a", "b"));
}

TEST(FlagSetTest, KeepsDefaults) {
  Parsed p;
  ASSERT_OK(ParseInto(&p, {}));
  EXPECT_EQ(p.model, "models/x");
  EXPECT_EQ(p.max_tokens, 16);
  EXPECT_TRUE(p.stream);
}

TEST(FlagSetTest, RejectsBadInput) {
  Parsed p;
  EXPECT_THAT(ParseInto(&p, {"--nope=1"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown flag --nope")));
  EXPECT_THAT(ParseInto(&p, {"--max-tokens=abc"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an integer")));
  EXPECT_THAT(ParseInto(&p, {"--model"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a value")));
  EXPECT_THAT(ParseInto(&p, {"stray"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument")));
}

TEST(FlagSetTest, CustomFlagCallsItsSetterAndReturnsItsError) {
  std::string seen;
  FlagSet flags("kvspan test", "A test.");
  flags.Add(
      "mode",
      [&seen](const std::string& v) {
        if (v == "bad") return absl::InvalidArgumentError("--mode: bad is not a mode");
        seen = v;
        return absl::OkStatus();
      },
      "auto", "a mode");
  const char* good[] = {"test", "--mode=int8"};
  ASSERT_OK(flags.Parse(2, good));
  EXPECT_EQ(seen, "int8");
  const char* bad[] = {"test", "--mode", "bad"};
  EXPECT_THAT(flags.Parse(3, bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--mode: bad")));
  EXPECT_EQ(seen, "int8");
  EXPECT_THAT(flags.Usage(), HasSubstr("(default: auto)"));
}

TEST(FlagSetTest, HelpListsFlagsWithDefaults) {
  Parsed p;
  FlagSet flags("kvspan test", "A test.");
  ASSERT_OK(ParseInto(&p, {"--help"}, &flags));
  EXPECT_TRUE(flags.help_requested());
  EXPECT_THAT(flags.Usage(), HasSubstr("--max-tokens"));
  EXPECT_THAT(flags.Usage(), HasSubstr("(default: 16)"));
}

// Check-only mode: a good command line exits 0 from Parse (in a child: EXPECT_EXIT forks), a bad
// one returns its error as at a real start.
TEST(FlagSetTest, CheckFlagsOnlyExitsZeroOnGoodFlagsAndReturnsTheError) {
  Parsed p;
  SetCheckFlagsOnly(true);
  EXPECT_EXIT((void)ParseInto(&p, {"--model=m", "--max-tokens", "7"}), ::testing::ExitedWithCode(0), "");
  EXPECT_THAT(ParseInto(&p, {"--nope"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown flag --nope")));
  SetCheckFlagsOnly(false);
  EXPECT_OK(ParseInto(&p, {"--model=m"}));
}

}  // namespace
}  // namespace kvspan
