// The tokenizer against independent references:
//   * SentencePiece itself (sp_cases.json) for the metaspace + byte_fallback files converted by
//     tools/sp_to_tokenizer_json.py, in the legacy (Llama 2) and metaspace (Mistral) styles
//   * a Python encoder with Hugging Face semantics for the byte-level GPT-2 / Llama 3 / Qwen2
//     styles (bytelevel_cases.json)
//   * the fixtures of our trained model, made by tools/bpe.py (models/kvspan-brown)
#include <string>
#include "common/file_util.h"
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/internal/nfc.h"
#include "model/internal/tokenizer_config.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kvspan::model {
namespace {

constexpr char kTestdata[] = "model/testdata/tokenizer/";

nlohmann::json ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? nlohmann::json::parse(*text) : nlohmann::json();
}

std::string Quote(const std::string& s) { return "\"" + s + "\""; }

// What Decode(expected ids) must give back.
enum class DecodeCheck {
  kExact,          // the text itself
  kNfc,            // the NFC form of the text (an NFC normalizer)
  kExceptU2581,    // the text, checked only if it has no literal "▁" (metaspace decodes it
                   // to a space)
};

void ExpectCasesMatch(const Tokenizer& tokenizer, const nlohmann::json& cases,
                      DecodeCheck check, size_t min_cases) {
  ASSERT_GE(cases.size(), min_cases);
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer.Encode(text), expected) << "text " << Quote(text);
    ASSERT_OK_AND_ASSIGN(std::string decoded, tokenizer.Decode(expected));
    if (check == DecodeCheck::kExceptU2581 && text.find("\xE2\x96\x81") != std::string::npos) {
      continue;
    }
    EXPECT_EQ(decoded, check == DecodeCheck::kNfc ? internal::NormalizeNfc(text) : text)
        << "decode of " << Quote(text);
  }
}

TEST(TokenizerFixtureTest, SentencePieceLegacyStyleMatchesSentencePiece) {
  ASSERT_OK_AND_ASSIGN(auto tokenizer,
                       Tokenizer::LoadFromDir(std::string(kTestdata) + "sp_legacy"));
  ExpectCasesMatch(*tokenizer, ReadJson(std::string(kTestdata) + "sp_cases.json")["cases"],
                   DecodeCheck::kExceptU2581, 40);
}

// metaspace_ids differ from SentencePiece's ids only for text with a leading space, where
// Hugging Face's Metaspace(prepend_scheme: first) adds no second "▁" (see the generator).
TEST(TokenizerFixtureTest, SentencePieceMetaspaceStyleMatchesSentencePiece) {
  ASSERT_OK_AND_ASSIGN(auto tokenizer,
                       Tokenizer::LoadFromDir(std::string(kTestdata) + "sp_metaspace"));
  const nlohmann::json cases = ReadJson(std::string(kTestdata) + "sp_cases.json")["cases"];
  ASSERT_GE(cases.size(), 40u);
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tokenizer->Encode(text), c["metaspace_ids"].get<std::vector<int32_t>>())
        << "text " << Quote(text);
  }
}

class ByteLevelFixtureTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ByteLevelFixtureTest, MatchesPythonReference) {
  const std::string style = GetParam();
  ASSERT_OK_AND_ASSIGN(auto tokenizer,
                       Tokenizer::LoadFromDir(std::string(kTestdata) + "bytelevel_" + style));
  ExpectCasesMatch(*tokenizer, ReadJson(std::string(kTestdata) + "bytelevel_cases.json")[style],
                   style == "qwen2" ? DecodeCheck::kNfc : DecodeCheck::kExact, 100);
}

INSTANTIATE_TEST_SUITE_P(Styles, ByteLevelFixtureTest,
                         ::testing::Values("gpt2", "llama3", "qwen2"));

TEST(TokenizerFixtureTest, KvspanBrownModelMatchesItsFixtures) {
  const std::string dir = "models/kvspan-brown";
  absl::StatusOr<std::string> fixtures =
      ReadFile(dir + "/reference/tokenizer_fixtures.json");
  if (absl::IsNotFound(fixtures.status())) {
    GTEST_SKIP() << dir << " has no reference/tokenizer_fixtures.json yet";
  }
  ASSERT_TRUE(fixtures.ok()) << fixtures.status();
  ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::LoadFromDir(dir));
  const nlohmann::json j = nlohmann::json::parse(*fixtures);
  ExpectCasesMatch(*tokenizer, j["cases"], DecodeCheck::kExact, 10);
  // bos/eos come from the config files: <|bos|> and <|eos|> (tools/bpe.py's id layout).
  EXPECT_EQ(tokenizer->bos_id(), tokenizer->TokenToId("<|bos|>"));
  EXPECT_THAT(tokenizer->eos_ids(), ::testing::ElementsAre(*tokenizer->TokenToId("<|eos|>")));
  EXPECT_EQ(tokenizer->pad_id(), tokenizer->TokenToId("<|pad|>"));
  EXPECT_TRUE(tokenizer->add_bos());
  std::vector<int32_t> with_bos = {*tokenizer->bos_id()};
  for (int32_t id : j["cases"][0]["ids"]) with_bos.push_back(id);
  EXPECT_EQ(tokenizer->EncodeForGeneration(j["cases"][0]["text"].get<std::string>()), with_bos);
}

}  // namespace
}  // namespace kvspan::model
