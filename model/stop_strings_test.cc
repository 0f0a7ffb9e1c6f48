#include "model/stop_strings.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvspan::model {
namespace {

// Feeds `pieces` and returns what was shown; `stopped` tells whether a stop string came.
std::string RunFilter(const std::vector<std::string>& stops, const std::vector<std::string>& pieces,
                bool* stopped) {
  StopStringFilter f(stops);
  std::string shown;
  for (const std::string& p : pieces) {
    shown += f.Push(p);
    if (f.stopped()) break;
  }
  if (!f.stopped()) shown += f.Flush();
  *stopped = f.stopped();
  EXPECT_EQ(shown, f.shown());
  return shown;
}

TEST(StopStringFilterTest, CutsBeforeStopSpanningPieces) {
  bool stopped;
  EXPECT_EQ(RunFilter({"END"}, {"hello E", "N", "D more"}, &stopped), "hello ");
  EXPECT_TRUE(stopped);
}

TEST(StopStringFilterTest, HoldsBackOnlyPossiblePrefixes) {
  StopStringFilter f({"###"});
  EXPECT_EQ(f.Push("abc#"), "abc");
  EXPECT_EQ(f.Push("#x"), "##x");  // "##x" can no longer start "###"
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.Push("#"), "");
  EXPECT_EQ(f.Flush(), "#");
}

TEST(StopStringFilterTest, EarliestOfSeveralStopsWins) {
  bool stopped;
  EXPECT_EQ(RunFilter({"\n\n", "b"}, {"a\n", "\nb"}, &stopped), "a");
  EXPECT_TRUE(stopped);
}

TEST(StopStringFilterTest, NoStopsPassesEverythingThrough) {
  bool stopped;
  EXPECT_EQ(RunFilter({}, {"a", "b", ""}, &stopped), "ab");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(RunFilter({""}, {"a", "b"}, &stopped), "ab");
}

// Against a direct definition: text cut at the first occurrence of any stop string,
// for random texts split into random pieces.
TEST(StopStringFilterTest, MatchesDirectDefinitionOnRandomSplits) {
  std::mt19937 rng(11);
  const std::vector<std::string> stops = {"aba", "bb", "cab"};
  for (int round = 0; round < 2000; ++round) {
    std::string text;
    const int len = rng() % 20;
    for (int i = 0; i < len; ++i) text += "abc"[rng() % 3];
    size_t cut = std::string::npos;
    for (const auto& s : stops) cut = std::min(cut, text.find(s));
    const std::string expected = text.substr(0, cut);
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      size_t n = 1 + rng() % 4;
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    bool stopped;
    ASSERT_EQ(RunFilter(stops, pieces, &stopped), expected) << text;
    ASSERT_EQ(stopped, cut != std::string::npos) << text;
  }
}

}  // namespace
}  // namespace kvspan::model
