#include "model/tokenizer.h"
#include "common/file_util.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/internal/nfc.h"
#include "model/internal/tokenizer_config.h"
#include "nlohmann/json.hpp"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kTestdata = "model/testdata/tokenizer/";

Json ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? Json::parse(*text) : Json();
}

// A fresh directory under the test temp dir holding the given files.
std::string MakeDir(const std::string& name,
                    const std::vector<std::pair<std::string, std::string>>& files) {
  const std::string dir = ::testing::TempDir() + "/tokenizer_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (const auto& [file, content] : files) std::ofstream(dir + "/" + file) << content;
  return dir;
}

std::string RandomBytes(std::mt19937& rng, size_t max_len) {
  std::string s(rng() % (max_len + 1), '\0');
  for (char& c : s) c = static_cast<char>(rng() % 256);
  return s;
}

// Random valid UTF-8 over all planes (surrogates excluded), biased to ASCII and spaces.
std::string RandomUtf8(std::mt19937& rng, size_t max_chars) {
  std::string s;
  const size_t n = rng() % (max_chars + 1);
  for (size_t i = 0; i < n; ++i) {
    uint32_t cp;
    switch (rng() % 4) {
      case 0: cp = 0x20 + rng() % 0x5F; break;
      case 1: cp = (rng() % 2) ? ' ' : '\n'; break;
      case 2: cp = 0x80 + rng() % (0x10000 - 0x80); break;
      default: cp = 0x10000 + rng() % (0x110000 - 0x10000); break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    } else if (cp < 0x10000) {
      s += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
            static_cast<char>(0x80 | (cp & 0x3F))};
    } else {
      s += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
            static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
  }
  return s;
}

std::unique_ptr<Tokenizer> Load(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadFromDir(kTestdata + name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromModifiedJson(const std::string& name,
                                                            void (*modify)(Json&)) {
  Json j = ReadJson(kTestdata + name + "/tokenizer.json");
  modify(j);
  return Tokenizer::FromJson(j.dump());
}

// ---- errors ----------------------------------------------------------------------------------

TEST(TokenizerErrorTest, MissingDirectoryIsNotFound) {
  EXPECT_THAT(Tokenizer::LoadFromDir(kTestdata + "no_such_dir"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("tokenizer.json")));
}

TEST(TokenizerErrorTest, TruncatedJsonIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(std::string text,
                       ReadFile(kTestdata + "bytelevel_gpt2/tokenizer.json"));
  const std::string dir = MakeDir("truncated", {{"tokenizer.json", text.substr(0, text.size() / 2)}});
  EXPECT_THAT(Tokenizer::LoadFromDir(dir), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(Tokenizer::FromJson(text.substr(0, text.size() - 2)),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(Tokenizer::FromJson(""), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(TokenizerErrorTest, EveryTruncationIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(std::string text,
                       ReadFile(kTestdata + "bytelevel_llama3/tokenizer.json"));
  for (size_t len = 0; len + 1 < text.size(); len += 1 + len / 7) {
    ASSERT_THAT(Tokenizer::FromJson(text.substr(0, len)), StatusIs(absl::StatusCode::kDataLoss))
        << "prefix of " << len << " bytes";
  }
}

// Any field replaced by a value of another type gives a status, never a crash, and never OK
// with a tokenizer that then fails to encode.
TEST(TokenizerErrorTest, CorruptedFieldsNeverCrash) {
  const Json original = ReadJson(kTestdata + "bytelevel_llama3/tokenizer.json");
  std::set<std::string> paths;
  const Json flat = original.flatten();
  for (auto it = flat.begin(); it != flat.end(); ++it) {
    // Every member on the way to each leaf, but only the first vocab entry and merge.
    for (Json::json_pointer p(it.key()); !p.empty(); p = p.parent_pointer()) {
      const std::string s = p.to_string();
      if ((s.rfind("/model/vocab/", 0) == 0 && s != "/model/vocab/!") ||
          (s.rfind("/model/merges/", 0) == 0 && s.rfind("/model/merges/0", 0) != 0)) {
        continue;
      }
      paths.insert(s);
    }
  }
  const Json replacements[] = {nullptr, 7, -1, "x", Json::array(), Json::object(), true};
  int num_ok = 0, num_errors = 0;
  for (const std::string& path : paths) {
    for (const Json& value : replacements) {
      Json j = original;
      j[Json::json_pointer(path)] = value;
      absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(j.dump());
      if (t.ok()) {
        ++num_ok;
        ASSERT_OK((*t)->Decode((*t)->Encode("Hello, wörld 123 \xFF")).status());
      } else {
        ++num_errors;
        ASSERT_THAT(t.status().code(),
                    ::testing::AnyOf(absl::StatusCode::kInvalidArgument,
                                     absl::StatusCode::kUnimplemented))
            << path << " = " << value.dump() << ": " << t.status();
      }
    }
  }
  EXPECT_GT(num_ok, 0);
  EXPECT_GT(num_errors, 0);
}

TEST(TokenizerErrorTest, WrongShapeIsInvalidArgument) {
  EXPECT_THAT(Tokenizer::FromJson("[1, 2]"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Tokenizer::FromJson("{}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["model"]["vocab"] = 3; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["model"]["merges"][0] = "a"; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merge 0")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2",
                               [](Json& j) { j["added_tokens"][0].erase("content"); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("content")));
}

TEST(TokenizerErrorTest, MergeWithUnknownTokenIsInvalidArgument) {
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2",
                               [](Json& j) { j["model"]["merges"].push_back("Ġt zzz"); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"zzz\" is not in")));
  // Both parts known, but the merged token is not in the vocabulary.
  EXPECT_THAT(FromModifiedJson("sp_legacy",
                               [](Json& j) { j["model"]["merges"].push_back({"<0x41>", "<0x42>"}); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("<0x41><0x42>")));
}

TEST(TokenizerErrorTest, InconsistentVocabularyIsInvalidArgument) {
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["model"]["vocab"]["Ġt"] = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("id 0 is used by both")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["model"]["vocab"]["x"] = -4; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-negative")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["added_tokens"][0]["id"] = 5; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("<|endoftext|>")));
  // A byte-level vocabulary must hold all 256 byte characters ("!" stands for byte 0x21).
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) {
                j["model"]["vocab"].erase("!");
                j["model"]["merges"] = Json::array();
              }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0x21")));
  EXPECT_THAT(FromModifiedJson("sp_legacy", [](Json& j) { j["model"]["unk_token"] = "<what>"; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unk_token")));
}

TEST(TokenizerErrorTest, UnsupportedComponentsAreUnimplementedAndNamed) {
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["model"]["type"] = "WordPiece"; }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("WordPiece")));
  EXPECT_THAT(FromModifiedJson("bytelevel_llama3",
                               [](Json& j) {
                                 j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
                                     "\\p{L}+|\\s+";
                               }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("unsupported regex")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2",
                               [](Json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("Whitespace")));
  EXPECT_THAT(FromModifiedJson("bytelevel_qwen2", [](Json& j) { j["normalizer"]["type"] = "NFKC"; }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("NFKC")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["decoder"]["type"] = "WordPiece"; }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("WordPiece")));
  EXPECT_THAT(FromModifiedJson("bytelevel_gpt2", [](Json& j) { j["model"]["dropout"] = 0.1; }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("dropout")));
  EXPECT_THAT(FromModifiedJson("sp_legacy",
                               [](Json& j) {
                                 j["model"]["byte_fallback"] = false;
                                 j["model"]["unk_token"] = nullptr;
                               }),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("byte_fallback")));
}

TEST(TokenizerErrorTest, DecodeOfUnknownIdIsInvalidArgument) {
  auto t = Load("bytelevel_gpt2");
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Decode({t->vocab_size()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the vocabulary")));
  EXPECT_THAT(t->Decode({5, -1}), StatusIs(absl::StatusCode::kInvalidArgument));
  // A gap in the id space names no token.
  ASSERT_OK_AND_ASSIGN(auto gappy, FromModifiedJson("bytelevel_gpt2", [](Json& j) {
                         j["added_tokens"][0]["id"] = 5000;
                       }));
  EXPECT_EQ(gappy->vocab_size(), 5001);
  EXPECT_THAT(gappy->Decode({4999}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("names no token")));
}

TEST(TokenizerErrorTest, BadConfigFiles) {
  ASSERT_OK_AND_ASSIGN(std::string json,
                       ReadFile(kTestdata + "sp_legacy/tokenizer.json"));
  EXPECT_THAT(Tokenizer::LoadFromDir(MakeDir("badcfg1", {{"tokenizer.json", json},
                                                         {"config.json", "{\"eos_token_id\": "}})),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("config.json")));
  EXPECT_THAT(Tokenizer::LoadFromDir(MakeDir("badcfg2", {{"tokenizer.json", json},
                                                         {"config.json", "{\"eos_token_id\": \"x\"}"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eos_token_id")));
  EXPECT_THAT(Tokenizer::LoadFromDir(MakeDir("badcfg3", {{"tokenizer.json", json},
                                                         {"generation_config.json",
                                                          "{\"eos_token_id\": [2, 99999]}"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("99999")));
  EXPECT_THAT(Tokenizer::LoadFromDir(MakeDir("badcfg4", {{"tokenizer.json", json},
                                                         {"tokenizer_config.json",
                                                          "{\"bos_token\": \"<nope>\"}"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("<nope>")));
  EXPECT_THAT(Tokenizer::LoadFromDir(MakeDir("badcfg5", {{"tokenizer.json", json},
                                                         {"config.json",
                                                          "{\"pad_token_id\": 70000}"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pad_token_id")));
}

// ---- special tokens and config ---------------------------------------------------------------

TEST(TokenizerTest, Llama3StyleBosFromTemplateAndEosListFromGenerationConfig) {
  auto t = Load("bytelevel_llama3");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos_id(), t->TokenToId("<|begin_of_text|>"));
  EXPECT_TRUE(t->add_bos());
  EXPECT_THAT(t->eos_ids(), ElementsAre(*t->TokenToId("<|end_of_text|>"),
                                        *t->TokenToId("<|eot_id|>")));
  std::vector<int32_t> expected = {*t->bos_id()};
  for (int32_t id : t->Encode("hello there")) expected.push_back(id);
  EXPECT_EQ(t->EncodeForGeneration("hello there"), expected);
}

TEST(TokenizerTest, Qwen2StyleHasNoBosAndConfigEosWins) {
  auto t = Load("bytelevel_qwen2");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos_id(), std::nullopt);
  EXPECT_FALSE(t->add_bos());
  EXPECT_THAT(t->eos_ids(), ElementsAre(*t->TokenToId("<|endoftext|>")));
  EXPECT_EQ(t->pad_id(), t->TokenToId("<|endoftext|>"));  // config.json pad_token_id
  EXPECT_EQ(t->EncodeForGeneration("hi"), t->Encode("hi"));
}

TEST(TokenizerTest, SentencePieceStyleSpecialTokens) {
  auto t = Load("sp_legacy");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_THAT(t->eos_ids(), ElementsAre(2));
  EXPECT_TRUE(t->IsSpecial(1));
  EXPECT_FALSE(t->IsSpecial(300));
  EXPECT_FALSE(t->IsSpecial(-3));
  EXPECT_EQ(t->IdToToken(1), "<s>");
  EXPECT_EQ(t->IdToToken(t->vocab_size()), std::nullopt);
  // FromJson alone: bos from the TemplateProcessing post-processor, no eos.
  ASSERT_OK_AND_ASSIGN(std::string json,
                       ReadFile(kTestdata + "sp_legacy/tokenizer.json"));
  ASSERT_OK_AND_ASSIGN(auto bare, Tokenizer::FromJson(json));
  EXPECT_EQ(bare->bos_id(), 1);
  EXPECT_TRUE(bare->add_bos());
  EXPECT_TRUE(bare->eos_ids().empty());
}

TEST(TokenizerTest, ConfigTokensMayBeAddedTokenObjects) {
  ASSERT_OK_AND_ASSIGN(std::string json,
                       ReadFile(kTestdata + "sp_legacy/tokenizer.json"));
  const std::string dir = MakeDir(
      "cfgobj", {{"tokenizer.json", json},
                 {"tokenizer_config.json",
                  R"({"bos_token": {"__type": "AddedToken", "content": "</s>"},
                      "eos_token": {"content": "<unk>"}, "add_bos_token": false})"}});
  ASSERT_OK_AND_ASSIGN(auto t, Tokenizer::LoadFromDir(dir));
  EXPECT_EQ(t->bos_id(), 2);
  EXPECT_FALSE(t->add_bos());
  EXPECT_THAT(t->eos_ids(), ElementsAre(0));
  EXPECT_EQ(t->pad_id(), std::nullopt);
  EXPECT_EQ(t->EncodeForGeneration("abc"), t->Encode("abc"));
}

TEST(TokenizerTest, ByteLevelAddPrefixSpace) {
  auto plain = Load("bytelevel_gpt2");
  ASSERT_NE(plain, nullptr);
  ASSERT_OK_AND_ASSIGN(auto prefixed, FromModifiedJson("bytelevel_gpt2", [](Json& j) {
                         j["pre_tokenizer"]["add_prefix_space"] = true;
                       }));
  EXPECT_EQ(prefixed->Encode("hello world"), plain->Encode(" hello world"));
  EXPECT_EQ(prefixed->Encode(" hello"), plain->Encode(" hello"));  // no second space
  // Each segment between added tokens gets its own prefix.
  const int32_t eot = *plain->TokenToId("<|endoftext|>");
  std::vector<int32_t> expected = plain->Encode(" a");
  expected.push_back(eot);
  for (int32_t id : plain->Encode(" b")) expected.push_back(id);
  EXPECT_EQ(prefixed->Encode("a<|endoftext|>b"), expected);
}

TEST(TokenizerTest, AddedTokensMatchLeftmostLongest) {
  auto t = Load("bytelevel_qwen2");
  ASSERT_NE(t, nullptr);
  const int32_t im = *t->TokenToId("<|im");
  const int32_t im_start = *t->TokenToId("<|im_start|>");
  EXPECT_FALSE(t->IsSpecial(im));
  EXPECT_TRUE(t->IsSpecial(im_start));
  std::vector<int32_t> expected = {im};
  for (int32_t id : t->Encode(" ")) expected.push_back(id);
  expected.push_back(im_start);
  for (int32_t id : t->Encode("x")) expected.push_back(id);
  EXPECT_EQ(t->Encode("<|im <|im_start|>x"), expected);
}

TEST(TokenizerTest, DecodeSkipsSpecialTokensOnRequest) {
  auto t = Load("bytelevel_qwen2");
  ASSERT_NE(t, nullptr);
  const std::vector<int32_t> ids = t->Encode("<|im_start|>hi <|im<|im_end|>");
  ASSERT_OK_AND_ASSIGN(std::string all, t->Decode(ids));
  EXPECT_EQ(all, "<|im_start|>hi <|im<|im_end|>");
  ASSERT_OK_AND_ASSIGN(std::string skipped, t->Decode(ids, {.skip_special_tokens = true}));
  EXPECT_EQ(skipped, "hi <|im");  // "<|im" is an added token but not a special one
}

// Const methods from several threads at once (run under the tsan preset, label tsan).
TEST(TokenizerTest, ConcurrentEncodeDecodeAgreeWithSerial) {
  auto t = Load("bytelevel_llama3");
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(9);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(RandomUtf8(rng, 40));
  std::vector<std::vector<int32_t>> serial;
  for (const std::string& s : texts) serial.push_back(t->Encode(s));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int rep = 0; rep < 5; ++rep) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const std::vector<int32_t> ids = t->Encode(texts[i]);
          absl::StatusOr<std::string> back = t->Decode(ids);
          if (ids != serial[i] || !back.ok() || *back != texts[i]) ++mismatches[w];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

// ---- round trips -----------------------------------------------------------------------------

class ByteLevelRoundTripTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ByteLevelRoundTripTest, ArbitraryBytesAndUtf8RoundTrip) {
  const std::string style = GetParam();
  auto t = Load("bytelevel_" + style);
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(42);
  for (int i = 0; i < 400; ++i) {
    const std::string s = (i % 2) ? RandomBytes(rng, 64) : RandomUtf8(rng, 32);
    ASSERT_OK_AND_ASSIGN(std::string back, t->Decode(t->Encode(s)));
    // An NFC normalizer (Qwen2) changes the text before encoding; everything else round-trips.
    ASSERT_EQ(back, style == "qwen2" ? internal::NormalizeNfc(s) : s) << "case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, ByteLevelRoundTripTest,
                         ::testing::Values("gpt2", "llama3", "qwen2"));

// Metaspace round trip, exactly: Decode(Encode(s)) == s for every byte string s that contains
// no "▁" (U+2581, decoded as a space) and no added-token text (which starts a new segment that
// gets its own "▁" prefix). The metaspace style (prepend_scheme "first") additionally drops a
// leading space, because it adds no "▁" of its own in front of one.
bool MetaspaceSafe(const std::string& s) {
  for (const char* bad : {"\xE2\x96\x81", "<s>", "</s>", "<unk>"}) {
    if (s.find(bad) != std::string::npos) return false;
  }
  return true;
}

TEST(MetaspaceRoundTripTest, LegacyStyleRoundTripsExactly) {
  auto t = Load("sp_legacy");
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(43);
  for (int i = 0; i < 400; ++i) {
    const std::string s = (i % 2) ? RandomBytes(rng, 64) : RandomUtf8(rng, 32);
    if (!MetaspaceSafe(s)) continue;
    ASSERT_OK_AND_ASSIGN(std::string back, t->Decode(t->Encode(s)));
    ASSERT_EQ(back, s) << "case " << i;
  }
  ASSERT_OK_AND_ASSIGN(std::string back, t->Decode(t->Encode("  two leading spaces")));
  EXPECT_EQ(back, "  two leading spaces");
}

TEST(MetaspaceRoundTripTest, MetaspaceStyleRoundTripsExceptOneLeadingSpace) {
  auto t = Load("sp_metaspace");
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(44);
  for (int i = 0; i < 400; ++i) {
    const std::string s = (i % 2) ? RandomBytes(rng, 64) : RandomUtf8(rng, 32);
    if (!MetaspaceSafe(s)) continue;
    ASSERT_OK_AND_ASSIGN(std::string back, t->Decode(t->Encode(s)));
    ASSERT_EQ(back, (!s.empty() && s[0] == ' ') ? s.substr(1) : s) << "case " << i;
  }
}

TEST(MetaspaceRoundTripTest, UnknownCharactersFallBackToBytes) {
  auto t = Load("sp_legacy");
  ASSERT_NE(t, nullptr);
  // U+4E2D is not in this small vocabulary: three <0xXX> tokens after "▁".
  const std::vector<int32_t> ids = t->Encode("\xE4\xB8\xAD");
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[1], t->TokenToId("<0xE4>"));
  EXPECT_EQ(ids[2], t->TokenToId("<0xB8>"));
  EXPECT_EQ(ids[3], t->TokenToId("<0xAD>"));
  // Invalid UTF-8 too, byte for byte.
  const std::vector<int32_t> bad = t->Encode("\xFF");
  EXPECT_EQ(bad.back(), t->TokenToId("<0xFF>"));
}

// A metaspace segment is one BPE word; the tokenizer cuts it before each "▁" when no token
// spans such a point. An extra unreachable token "x▁y" turns the cut off: the ids must not
// change on long random text (this also runs the heap merge loop on long words).
TEST(MetaspaceRoundTripTest, CuttingWordsAtMetaspaceDoesNotChangeIds) {
  auto cut = Load("sp_legacy");
  ASSERT_NE(cut, nullptr);
  ASSERT_OK_AND_ASSIGN(auto whole, FromModifiedJson("sp_legacy", [](Json& j) {
                         j["model"]["vocab"]["x\u2581y"] = 700;
                       }));
  std::mt19937 rng(46);
  for (int i = 0; i < 50; ++i) {
    const std::string s = (i % 2) ? RandomBytes(rng, 600) : RandomUtf8(rng, 300);
    ASSERT_EQ(cut->Encode(s), whole->Encode(s)) << "case " << i;
  }
  ASSERT_OK_AND_ASSIGN(std::string licenses,
                       ReadFile(kTestdata + "sp_cases.json"));
  ASSERT_EQ(cut->Encode(licenses), whole->Encode(licenses));
}

// ---- other metaspace variants ----------------------------------------------------------------

TEST(MetaspaceVariantTest, MetaspaceDecoderDecodesAsStripDecoder) {
  auto strip = Load("sp_metaspace");
  ASSERT_NE(strip, nullptr);
  ASSERT_OK_AND_ASSIGN(auto meta, FromModifiedJson("sp_metaspace", [](Json& j) {
                         j["decoder"] = Json::parse(
                             R"({"type":"Sequence","decoders":[{"type":"ByteFallback"},
                                 {"type":"Metaspace","replacement":"\u2581",
                                  "prepend_scheme":"first","split":false}]})");
                       }));
  std::mt19937 rng(45);
  for (int i = 0; i < 200; ++i) {
    std::vector<int32_t> ids(rng() % 12);
    for (int32_t& id : ids) id = rng() % strip->vocab_size();
    ASSERT_OK_AND_ASSIGN(std::string a, strip->Decode(ids));
    ASSERT_OK_AND_ASSIGN(std::string b, meta->Decode(ids));
    ASSERT_EQ(a, b);
  }
}

TEST(MetaspaceVariantTest, SplitAndPrependSchemes) {
  auto first = Load("sp_metaspace");  // prepend_scheme "first", split false
  ASSERT_NE(first, nullptr);
  ASSERT_OK_AND_ASSIGN(auto always_split, FromModifiedJson("sp_metaspace", [](Json& j) {
                         j["pre_tokenizer"]["prepend_scheme"] = "always";
                         j["pre_tokenizer"]["split"] = true;
                       }));
  // split: each "▁word" is encoded on its own; the pieces of this vocabulary never span a
  // "▁" inside, so the result equals the unsplit encoding of the words one by one.
  std::vector<int32_t> expected = first->Encode("license");
  for (int32_t id : first->Encode(" terms")) expected.push_back(id);
  EXPECT_EQ(always_split->Encode("license terms"), expected);
  // "always" puts "▁" in front of the text after an added token, "first" does not.
  const int32_t bos = *first->TokenToId("<s>");
  std::vector<int32_t> with_prefix = {bos};
  for (int32_t id : first->Encode("license")) with_prefix.push_back(id);
  EXPECT_EQ(always_split->Encode("<s>license"), with_prefix);
  EXPECT_NE(first->Encode("<s>license"), with_prefix);
}

}  // namespace
}  // namespace kvspan::model
