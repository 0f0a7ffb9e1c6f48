#include "model/token_decoder.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/internal/unicode.h"
#include "model/tokenizer.h"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;

std::unique_ptr<Tokenizer> Load(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::LoadFromDir("model/testdata/tokenizer/" + name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

// Streams ids through a TokenDecoder; checks the concatenation against Decode and that no
// output ends inside a valid UTF-8 character of the whole text (invalid bytes are one-byte
// units, as internal::DecodeUtf8 sees them).
void ExpectStreamEqualsDecode(const Tokenizer& t, const std::vector<int32_t>& ids,
                              const DecodeOptions& options) {
  ASSERT_OK_AND_ASSIGN(std::string whole, t.Decode(ids, options));
  std::vector<bool> boundary(whole.size() + 1, false);
  for (size_t pos = 0; pos < whole.size(); pos += internal::DecodeUtf8(whole, pos).length) {
    boundary[pos] = true;
  }
  boundary[whole.size()] = true;
  TokenDecoder decoder(&t, options);
  std::string streamed;
  for (int32_t id : ids) {
    ASSERT_OK_AND_ASSIGN(std::string piece, decoder.Next(id));
    streamed += piece;
    ASSERT_LE(streamed.size(), whole.size());
    EXPECT_TRUE(boundary[streamed.size()]) << "output stops inside a character";
  }
  streamed += decoder.Finish();
  ASSERT_EQ(streamed, whole);
}

class TokenDecoderTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenDecoderTest, RandomIdSequencesStreamAsDecode) {
  auto t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::vector<int32_t> ids(rng() % 16);
    for (int32_t& id : ids) id = rng() % t->vocab_size();
    ExpectStreamEqualsDecode(*t, ids, {});
    ExpectStreamEqualsDecode(*t, ids, {.skip_special_tokens = true});
  }
}

// Text whose characters are split across tokens (byte tokens / byte-level merges).
TEST_P(TokenDecoderTest, EncodedMultiByteTextStreamsAsDecode) {
  auto t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  for (const char* text : {"日本語のテキスト 🙂👍🏽", " leading space", "a\xFF\xE4\xBD" "b",
                           "\xE4\xB8", "Ελληνικά и русский", ""}) {
    ExpectStreamEqualsDecode(*t, t->Encode(text), {});
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, TokenDecoderTest,
                         ::testing::Values("sp_legacy", "sp_metaspace", "bytelevel_gpt2",
                                           "bytelevel_llama3", "bytelevel_qwen2"));

TEST(TokenDecoderTest, HoldsBackAnIncompleteCharacter) {
  auto t = Load("sp_legacy");
  ASSERT_NE(t, nullptr);
  TokenDecoder decoder(t.get());
  // "▁" then the three bytes of U+4E2D: nothing comes out until the last byte arrives, and
  // the leading space of the first token is stripped as Decode does.
  ASSERT_OK_AND_ASSIGN(std::string a, decoder.Next(*t->TokenToId("\xE2\x96\x81")));
  EXPECT_EQ(a, "");
  ASSERT_OK_AND_ASSIGN(std::string b, decoder.Next(*t->TokenToId("<0xE4>")));
  EXPECT_EQ(b, "");
  ASSERT_OK_AND_ASSIGN(std::string c, decoder.Next(*t->TokenToId("<0xB8>")));
  EXPECT_EQ(c, "");
  ASSERT_OK_AND_ASSIGN(std::string d, decoder.Next(*t->TokenToId("<0xAD>")));
  EXPECT_EQ(d, "\xE4\xB8\xAD");
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(TokenDecoderTest, FinishReturnsHeldBytesAndResets) {
  auto t = Load("bytelevel_gpt2");
  ASSERT_NE(t, nullptr);
  TokenDecoder decoder(t.get());
  const std::vector<int32_t> ids = t->Encode("\xE4\xB8");  // a truncated character
  std::string out;
  for (int32_t id : ids) {
    ASSERT_OK_AND_ASSIGN(std::string piece, decoder.Next(id));
    out += piece;
  }
  EXPECT_EQ(out, "");
  EXPECT_EQ(decoder.Finish(), "\xE4\xB8");
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(TokenDecoderTest, BadIdIsInvalidArgumentAndLeavesStateAlone) {
  auto t = Load("bytelevel_gpt2");
  ASSERT_NE(t, nullptr);
  TokenDecoder decoder(t.get());
  ASSERT_OK_AND_ASSIGN(std::string a, decoder.Next(*t->TokenToId("o")));
  EXPECT_THAT(decoder.Next(t->vocab_size()), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(decoder.Next(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(a + decoder.Finish(), "o");
}

}  // namespace
}  // namespace kvspan::model
