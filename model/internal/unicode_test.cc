#include "model/internal/unicode.h"

#include <string>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace kvspan::model::internal {
namespace {

Utf8Unit At0(absl::string_view s) { return DecodeUtf8(s, 0); }

TEST(UnicodeTest, DecodesValidSequences) {
  EXPECT_EQ(At0("A").cp, 0x41u);
  EXPECT_EQ(At0("\xC3\xA9").cp, 0xE9u);
  EXPECT_EQ(At0("\xC3\xA9").length, 2);
  EXPECT_EQ(At0("\xE2\x96\x81").cp, 0x2581u);
  EXPECT_EQ(At0("\xF0\x9F\x99\x82").cp, 0x1F642u);
  EXPECT_EQ(At0("\xF4\x8F\xBF\xBF").cp, 0x10FFFFu);
}

TEST(UnicodeTest, RejectsInvalidSequencesOneByteAtATime) {
  for (const char* bad : {"\x80", "\xFF", "\xC0\x80", "\xC1\xBF",  // continuation, overlong
                          "\xE0\x9F\xBF",                         // overlong 3-byte
                          "\xED\xA0\x80", "\xED\xBF\xBF",         // surrogates
                          "\xF0\x8F\xBF\xBF",                     // overlong 4-byte
                          "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", // above U+10FFFF
                          "\xE4\xBD", "\xE4\xBD" "A", "\xF0\x9F\x99"}) {  // truncated
    const Utf8Unit u = At0(bad);
    EXPECT_EQ(u.cp, kInvalidCodepoint) << "input " << absl::CEscape(bad);
    EXPECT_EQ(u.length, 1);
  }
}

TEST(UnicodeTest, IncompleteSuffixIsAProperPrefixOfAValidSequence) {
  EXPECT_EQ(IncompleteUtf8Suffix(""), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("a\xC3"), 1u);
  EXPECT_EQ(IncompleteUtf8Suffix("a\xE4\xBD"), 2u);
  EXPECT_EQ(IncompleteUtf8Suffix("\xF0\x9F\x99"), 3u);
  EXPECT_EQ(IncompleteUtf8Suffix("\xF0\x9F\x99\x82"), 0u);  // complete
  EXPECT_EQ(IncompleteUtf8Suffix("\xE0\x80"), 0u);          // can never become valid
  EXPECT_EQ(IncompleteUtf8Suffix("\xED\xA0"), 0u);          // would be a surrogate
  EXPECT_EQ(IncompleteUtf8Suffix("\x80\x80\x80"), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("\xFF"), 0u);
}

TEST(UnicodeTest, CharacterClasses) {
  EXPECT_TRUE(IsLetter('a'));
  EXPECT_TRUE(IsLetter(0x17F));    // LATIN SMALL LETTER LONG S
  EXPECT_TRUE(IsLetter(0x65E5));   // CJK
  EXPECT_FALSE(IsLetter('1'));
  EXPECT_TRUE(IsNumber(0x663));    // ARABIC-INDIC DIGIT THREE
  EXPECT_TRUE(IsNumber(0x216B));   // ROMAN NUMERAL TWELVE (Nl)
  EXPECT_TRUE(IsNumber(0xBD));     // VULGAR FRACTION ONE HALF (No)
  EXPECT_TRUE(IsWhiteSpace(0x85));
  EXPECT_TRUE(IsWhiteSpace(0x3000));
  EXPECT_FALSE(IsWhiteSpace(0x200B));  // ZERO WIDTH SPACE is not White_Space
  EXPECT_FALSE(IsLetter(kInvalidCodepoint));
  EXPECT_FALSE(IsNumber(kInvalidCodepoint));
  EXPECT_FALSE(IsWhiteSpace(kInvalidCodepoint));
  EXPECT_EQ(CombiningClass(0x301), 230);
  EXPECT_EQ(CombiningClass('a'), 0);
}

}  // namespace
}  // namespace kvspan::model::internal
