#include "model/internal/nfc.h"
#include "common/file_util.h"

#include <string>

#include "gtest/gtest.h"
#include "model/internal/tokenizer_config.h"
#include "nlohmann/json.hpp"

namespace kvspan::model::internal {
namespace {

// Expected values from Python's unicodedata.normalize("NFC") (same Unicode version as the
// tables): canonical reordering, Hangul, singletons, composition exclusions, blocked marks.
TEST(NfcTest, MatchesPythonUnicodedata) {
  absl::StatusOr<std::string> text = ReadFile("model/testdata/tokenizer/nfc_cases.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json cases = nlohmann::json::parse(*text);
  ASSERT_GE(cases.size(), 400u);
  for (const auto& c : cases) {
    const std::string input = c["text"].get<std::string>();
    EXPECT_EQ(NormalizeNfc(input), c["nfc"].get<std::string>()) << "input \"" << input << "\"";
  }
}

TEST(NfcTest, KnownCompositions) {
  EXPECT_EQ(NormalizeNfc("e\xCC\x81"), "\xC3\xA9");                  // e + U+0301 -> é
  EXPECT_EQ(NormalizeNfc("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");  // L + V -> U+AC00
  EXPECT_EQ(NormalizeNfc("\xE2\x84\xAB"), "\xC3\x85");                // U+212B -> U+00C5
}

TEST(NfcTest, InvalidBytesPassThroughAndBlockNothingElse) {
  EXPECT_EQ(NormalizeNfc("\xFF" "e\xCC\x81\xFE"), "\xFF\xC3\xA9\xFE");
  // A mark after an invalid byte has no starter to join.
  EXPECT_EQ(NormalizeNfc("\xFF\xCC\x81"), "\xFF\xCC\x81");
  EXPECT_EQ(NormalizeNfc("\xE4\xBD"), "\xE4\xBD");
}

}  // namespace
}  // namespace kvspan::model::internal
