#include "model/internal/pretokenize.h"
#include "common/file_util.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/internal/tokenizer_config.h"
#include "nlohmann/json.hpp"

namespace kvspan::model::internal {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(absl::string_view text, SplitPattern pattern) {
  std::vector<absl::string_view> views;
  SplitWithPattern(text, pattern, &views);
  return std::vector<std::string>(views.begin(), views.end());
}

// Expected splits come from Python's `regex` module running the real patterns
// (tools/make_tokenizer_testdata.py): hand-written strings plus random mixes of letters,
// digits, white space, apostrophes and non-ASCII characters.
TEST(PretokenizeTest, MatchesPythonRegexOnFixtures) {
  absl::StatusOr<std::string> text =
      ReadFile("model/testdata/tokenizer/pretokenize_cases.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json cases = nlohmann::json::parse(*text);
  const std::pair<const char*, SplitPattern> patterns[] = {
      {"gpt2", SplitPattern::kGpt2}, {"llama3", SplitPattern::kLlama3},
      {"qwen2", SplitPattern::kQwen2}};
  for (const auto& [name, pattern] : patterns) {
    ASSERT_GE(cases[name].size(), 100u) << name;
    for (const auto& c : cases[name]) {
      const std::string input = c["text"].get<std::string>();
      EXPECT_EQ(Split(input, pattern), c["pieces"].get<std::vector<std::string>>())
          << name << " on \"" << input << "\"";
    }
  }
}

TEST(PretokenizeTest, RecognizesExactlyTheThreePatterns) {
  EXPECT_EQ(FindSplitPattern(kGpt2PatternSource), SplitPattern::kGpt2);
  EXPECT_EQ(FindSplitPattern(kLlama3PatternSource), SplitPattern::kLlama3);
  EXPECT_EQ(FindSplitPattern(kQwen2PatternSource), SplitPattern::kQwen2);
  EXPECT_EQ(FindSplitPattern("\\s+"), std::nullopt);
  EXPECT_EQ(FindSplitPattern(std::string(kGpt2PatternSource) + " "), std::nullopt);
}

TEST(PretokenizeTest, InvalidBytesAreOtherCharacters) {
  // 0xFF and a truncated 3-byte sequence are each one non-letter, non-space character.
  EXPECT_THAT(Split("ab\xFF\xFE" "cd", SplitPattern::kGpt2), ElementsAre("ab", "\xFF\xFE", "cd"));
  EXPECT_THAT(Split("x \xE4\xBD", SplitPattern::kGpt2), ElementsAre("x", " \xE4\xBD"));
  EXPECT_THAT(Split("\xC0" "abc", SplitPattern::kLlama3), ElementsAre("\xC0" "abc"));
  EXPECT_THAT(Split("1234\xFF\n\n", SplitPattern::kLlama3), ElementsAre("123", "4", "\xFF\n\n"));
}

TEST(PretokenizeTest, PiecesConcatenateToArbitraryBytes) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 500; ++iter) {
    std::string input(rng() % 40, '\0');
    for (char& c : input) c = static_cast<char>(rng() % 256);
    for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kLlama3, SplitPattern::kQwen2}) {
      std::string joined;
      for (const std::string& piece : Split(input, p)) {
        ASSERT_FALSE(piece.empty());
        joined += piece;
      }
      ASSERT_EQ(joined, input);
    }
  }
}

}  // namespace
}  // namespace kvspan::model::internal
