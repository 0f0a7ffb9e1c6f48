// End-to-end generation on the shipped model (models/kvspan-brown) and, for the context
// limit, on a small random checkpoint.
#include "model/generator.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/testing/random_checkpoint.h"
#include "nlohmann/json.hpp"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;

constexpr char kModelDir[] = "models/kvspan-brown";

struct ReferencePrompt {
  std::vector<int32_t> ids;         // bos included
  std::vector<int32_t> greedy_ids;  // 32 argmax continuation ids, no stopping
};

std::vector<ReferencePrompt> LoadPrompts() {
  std::ifstream in(std::string(kModelDir) + "/reference/prompts.json");
  EXPECT_TRUE(in.good()) << "missing " << kModelDir << "/reference/prompts.json";
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str());
  std::vector<ReferencePrompt> out;
  for (const auto& p : j.at("prompts")) {
    out.push_back({p.at("ids").get<std::vector<int32_t>>(),
                   p.at("greedy_new_ids").get<std::vector<int32_t>>()});
  }
  return out;
}

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::Load(kModelDir, {.num_threads = 2});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
    auto t = Tokenizer::LoadFromDir(kModelDir);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = t->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
  }
  static GenerationOptions Greedy(int max_tokens) {
    GenerationOptions o;
    o.sampling.temperature = 0;
    o.max_tokens = max_tokens;
    o.ignore_eos = true;
    return o;
  }
  static Model* model_;
  static Tokenizer* tokenizer_;
};
Model* GeneratorTest::model_ = nullptr;
Tokenizer* GeneratorTest::tokenizer_ = nullptr;

// Greedy generation through the whole loop (chunked prefill, decode with the cache,
// streaming) reproduces the PyTorch greedy continuations token for token.
TEST_F(GeneratorTest, GreedyMatchesPyTorchReference) {
  for (const ReferencePrompt& p : LoadPrompts()) {
    GenerationOptions o = Greedy(static_cast<int>(p.greedy_ids.size()));
    o.prefill_chunk_tokens = 3;  // several prefill steps for every prompt
    std::string streamed;
    ASSERT_OK_AND_ASSIGN(GenerationResult r,
                         GenerateFromIds(*model_, *tokenizer_, p.ids, o,
                                         [&](absl::string_view s) { streamed.append(s.data(), s.size()); }));
    EXPECT_EQ(r.output_ids, p.greedy_ids);
    EXPECT_EQ(r.finish_reason, FinishReason::kMaxTokens);
    EXPECT_EQ(streamed, r.text);
    ASSERT_OK_AND_ASSIGN(std::string decoded, tokenizer_->Decode(r.output_ids));
    EXPECT_EQ(r.text, decoded);
  }
}

TEST_F(GeneratorTest, StopsAtStopTokenWithoutEmittingIt) {
  const ReferencePrompt p = LoadPrompts().front();
  // The first id of the continuation that did not occur before it.
  size_t k = 1;
  while (k < p.greedy_ids.size() &&
         std::find(p.greedy_ids.begin(), p.greedy_ids.begin() + k, p.greedy_ids[k]) !=
             p.greedy_ids.begin() + k) {
    ++k;
  }
  ASSERT_LT(k, p.greedy_ids.size());
  GenerationOptions o = Greedy(32);
  o.stop_token_ids = {p.greedy_ids[k]};
  ASSERT_OK_AND_ASSIGN(GenerationResult r, GenerateFromIds(*model_, *tokenizer_, p.ids, o));
  EXPECT_EQ(r.finish_reason, FinishReason::kStopToken);
  EXPECT_EQ(r.output_ids, std::vector<int32_t>(p.greedy_ids.begin(), p.greedy_ids.begin() + k));
}

TEST_F(GeneratorTest, StopStringCutsTheText) {
  const ReferencePrompt p = LoadPrompts().front();
  ASSERT_OK_AND_ASSIGN(GenerationResult full, GenerateFromIds(*model_, *tokenizer_, p.ids, Greedy(32)));
  ASSERT_GE(full.text.size(), 12u);
  // A stop string from the middle of the greedy text: the output is the text before it.
  const std::string stop = full.text.substr(full.text.size() / 2, 4);
  GenerationOptions o = Greedy(32);
  o.stop_strings = {stop};
  std::string streamed;
  ASSERT_OK_AND_ASSIGN(GenerationResult r,
                       GenerateFromIds(*model_, *tokenizer_, p.ids, o,
                                       [&](absl::string_view s) { streamed.append(s.data(), s.size()); }));
  EXPECT_EQ(r.finish_reason, FinishReason::kStopString);
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(streamed, r.text);
}

TEST_F(GeneratorTest, SeededSamplingIsReproducible) {
  GenerationOptions o;
  o.sampling = {.temperature = 0.9, .top_k = 40, .top_p = 0.95, .seed = 123};
  o.max_tokens = 16;
  o.ignore_eos = true;
  ASSERT_OK_AND_ASSIGN(GenerationResult a, Generate(*model_, *tokenizer_, "The jury said", o));
  ASSERT_OK_AND_ASSIGN(GenerationResult b, Generate(*model_, *tokenizer_, "The jury said", o));
  EXPECT_EQ(a.output_ids, b.output_ids);
  EXPECT_EQ(a.output_ids.size(), 16u);
  EXPECT_EQ(a.prompt_ids.front(), tokenizer_->bos_id().value());
}

TEST_F(GeneratorTest, RejectsBadRequests) {
  GenerationOptions o = Greedy(4);
  EXPECT_THAT(GenerateFromIds(*model_, *tokenizer_, {}, o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<int32_t> too_long(model_->config().max_position_embeddings + 1, 5);
  EXPECT_THAT(GenerateFromIds(*model_, *tokenizer_, too_long, o),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("context")));
  EXPECT_THAT(GenerateFromIds(*model_, *tokenizer_, {0, model_->config().vocab_size}, o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o.max_tokens = -1;
  EXPECT_THAT(GenerateFromIds(*model_, *tokenizer_, {0, 5}, o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o.max_tokens = 4;
  o.sampling.top_p = 2;
  EXPECT_THAT(GenerateFromIds(*model_, *tokenizer_, {0, 5}, o),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A model with a 16-token context: a 10-token prompt leaves room for 7 generated tokens
// (the last one is sampled from the logits at position 15).
TEST(GeneratorContextTest, StopsWhenTheContextIsFull) {
  testing::RandomCheckpointOptions opts;
  opts.vocab_size = 4096;  // the shipped tokenizer's vocabulary
  opts.max_position_embeddings = 16;
  const std::string dir = ::testing::TempDir() + "/generator_context_model";
  ASSERT_OK(testing::WriteRandomCheckpoint(dir, opts));
  ASSERT_OK_AND_ASSIGN(auto model, Model::Load(dir, {.num_threads = 1}));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::LoadFromDir(kModelDir));
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = 20;
  o.ignore_eos = true;
  std::vector<int32_t> prompt(10, 7);
  ASSERT_OK_AND_ASSIGN(GenerationResult r, GenerateFromIds(*model, *tokenizer, prompt, o));
  EXPECT_EQ(r.finish_reason, FinishReason::kContextFull);
  EXPECT_EQ(r.output_ids.size(), 7u);
}

}  // namespace
}  // namespace kvspan::model
