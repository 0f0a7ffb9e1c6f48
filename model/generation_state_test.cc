// GenerationState on hand-made logits (greedy picks the id given the largest logit) with
// the shipped tokenizer (models/kvspan-brown): each finish rule, the text contract (the
// step that finishes carries the held-back text; the pieces concatenate to text()),
// option errors, and seeded sampling.
#include "model/generation_state.h"

#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

class GenerationStateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = Tokenizer::LoadFromDir("models/kvspan-brown");
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = t->release();
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  void SetUp() override {
    config_.vocab_size = tokenizer_->vocab_size();
    config_.max_position_embeddings = 64;
    config_.eos_token_ids = {tokenizer_->vocab_size() - 1};
  }
  static GenerationOptions Greedy(int max_tokens) {
    return {.sampling = {.temperature = 0}, .max_tokens = max_tokens, .ignore_eos = true};
  }
  // Logits whose argmax is `id`.
  std::vector<float> Pick(int32_t id) const {
    std::vector<float> logits(config_.vocab_size, 0.0f);
    logits[id] = 10.0f;
    return logits;
  }
  // Steps greedily through `ids` until the state finishes; returns the concatenated texts.
  std::string Run(GenerationState* state, const std::vector<int32_t>& ids, std::vector<StepResult>* steps) {
    std::string streamed;
    for (int32_t id : ids) {
      if (state->finished()) break;
      absl::StatusOr<StepResult> step = state->Step(Pick(id));
      EXPECT_TRUE(step.ok()) << step.status();
      if (!step.ok()) break;
      EXPECT_EQ(step->token_id, id);
      streamed += step->text;
      steps->push_back(*std::move(step));
    }
    return streamed;
  }
  std::string Decode(const std::vector<int32_t>& ids) const {
    absl::StatusOr<std::string> s = tokenizer_->Decode(ids);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.value_or("");
  }

  static Tokenizer* tokenizer_;
  ModelConfig config_;
};
Tokenizer* GenerationStateTest::tokenizer_ = nullptr;

TEST_F(GenerationStateTest, StopTokenEndsWithoutBeingEmitted) {
  const std::vector<int32_t> ids = tokenizer_->Encode(" the jury said");
  ASSERT_GE(ids.size(), 3u);
  GenerationOptions o = Greedy(32);
  o.stop_token_ids = {ids[2]};
  ASSERT_OK_AND_ASSIGN(GenerationState state, GenerationState::Create(o, tokenizer_, config_, 5));
  std::vector<StepResult> steps;
  const std::string streamed = Run(&state, ids, &steps);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_TRUE(steps[0].in_output);
  EXPECT_FALSE(steps[0].finished);
  EXPECT_FALSE(steps[2].in_output);
  EXPECT_TRUE(steps[2].finished);
  EXPECT_EQ(steps[2].finish_reason, FinishReason::kStopToken);
  EXPECT_TRUE(state.finished());
  EXPECT_EQ(state.finish_reason(), FinishReason::kStopToken);
  EXPECT_EQ(state.output_ids(), std::vector<int32_t>(ids.begin(), ids.begin() + 2));
  EXPECT_EQ(state.text(), Decode(state.output_ids()));
  EXPECT_EQ(streamed, state.text());
  EXPECT_THAT(state.Step(Pick(ids[0])), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// Accept (a token sampled elsewhere) applies Step's rules: the same results, step by step,
// through a stop string, and the same errors.
TEST_F(GenerationStateTest, AcceptIsStepWithoutSampling) {
  const std::vector<int32_t> ids = tokenizer_->Encode(" the jury said that the city");
  GenerationOptions o = Greedy(32);
  o.stop_strings = {"said"};
  ASSERT_OK_AND_ASSIGN(GenerationState stepped, GenerationState::Create(o, tokenizer_, config_, 5));
  ASSERT_OK_AND_ASSIGN(GenerationState accepted, GenerationState::Create(o, tokenizer_, config_, 5));
  for (int32_t id : ids) {
    if (stepped.finished()) break;
    ASSERT_OK_AND_ASSIGN(StepResult a, stepped.Step(Pick(id)));
    ASSERT_OK_AND_ASSIGN(StepResult b, accepted.Accept(id));
    EXPECT_EQ(a.token_id, b.token_id);
    EXPECT_EQ(a.in_output, b.in_output);
    EXPECT_EQ(a.text, b.text);
    EXPECT_EQ(a.finished, b.finished);
  }
  ASSERT_TRUE(stepped.finished());
  EXPECT_TRUE(accepted.finished());
  EXPECT_EQ(accepted.finish_reason(), FinishReason::kStopString);
  EXPECT_EQ(accepted.text(), stepped.text());
  EXPECT_EQ(accepted.output_ids(), stepped.output_ids());
  EXPECT_THAT(accepted.Accept(ids[0]), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(GenerationState fresh, GenerationState::Create(o, tokenizer_, config_, 5));
  EXPECT_THAT(fresh.Accept(config_.vocab_size + 3), StatusIs(absl::StatusCode::kInvalidArgument));
}

// The tokenizer's and the config's eos ids stop generation unless ignore_eos.
TEST_F(GenerationStateTest, EosStopsUnlessIgnored) {
  const int32_t config_eos = config_.eos_token_ids[0];
  for (bool ignore_eos : {false, true}) {
    GenerationOptions o = Greedy(4);
    o.ignore_eos = ignore_eos;
    ASSERT_OK_AND_ASSIGN(GenerationState state, GenerationState::Create(o, tokenizer_, config_, 5));
    ASSERT_OK_AND_ASSIGN(StepResult step, state.Step(Pick(config_eos)));
    EXPECT_EQ(step.finished, !ignore_eos);
    EXPECT_EQ(step.in_output, ignore_eos);
  }
  ASSERT_FALSE(tokenizer_->eos_ids().empty());
  ASSERT_OK_AND_ASSIGN(GenerationState state,
                       GenerationState::Create({.max_tokens = 4}, tokenizer_, config_, 5));
  ASSERT_OK_AND_ASSIGN(StepResult step, state.Step(Pick(tokenizer_->eos_ids()[0])));
  EXPECT_EQ(step.finish_reason, FinishReason::kStopToken);
  EXPECT_TRUE(state.output_ids().empty());
}

TEST_F(GenerationStateTest, StopStringCutsTheText) {
  const std::vector<int32_t> ids = tokenizer_->Encode(" the jury said that the city");
  const std::string full = Decode(ids);
  GenerationOptions o = Greedy(32);
  o.stop_strings = {"said"};
  ASSERT_OK_AND_ASSIGN(GenerationState state, GenerationState::Create(o, tokenizer_, config_, 5));
  std::vector<StepResult> steps;
  const std::string streamed = Run(&state, ids, &steps);
  ASSERT_TRUE(state.finished());
  EXPECT_EQ(state.finish_reason(), FinishReason::kStopString);
  EXPECT_TRUE(steps.back().in_output);  // the token that completed the stop string is output
  EXPECT_LT(steps.size(), ids.size());
  EXPECT_EQ(state.text(), full.substr(0, full.find("said")));
  EXPECT_EQ(streamed, state.text());
}

// Text a stop-string prefix or an incomplete UTF-8 character holds back comes with the
// step that finishes the sequence.
TEST_F(GenerationStateTest, FinishingStepCarriesTheHeldBackText) {
  // "é" is two byte tokens in this byte-level vocabulary: after the first, the decoder
  // holds its byte back.
  const std::vector<int32_t> accent = tokenizer_->Encode("\xc3\xa9");
  ASSERT_EQ(accent.size(), 2u);
  ASSERT_OK_AND_ASSIGN(GenerationState a, GenerationState::Create(Greedy(1), tokenizer_, config_, 5));
  ASSERT_OK_AND_ASSIGN(StepResult last, a.Step(Pick(accent[0])));
  EXPECT_TRUE(last.finished);
  EXPECT_EQ(last.finish_reason, FinishReason::kMaxTokens);
  EXPECT_EQ(last.text, "\xc3");  // the raw byte, once
  EXPECT_EQ(a.text(), "\xc3");

  // " the ju" holds back " ju" (a prefix of the stop string " jury!") until the end.
  const std::vector<int32_t> ids = tokenizer_->Encode(" the ju");
  GenerationOptions o = Greedy(static_cast<int>(ids.size()));
  o.stop_strings = {" jury!"};
  ASSERT_OK_AND_ASSIGN(GenerationState b, GenerationState::Create(o, tokenizer_, config_, 5));
  std::vector<StepResult> steps;
  const std::string streamed = Run(&b, ids, &steps);
  ASSERT_EQ(steps.size(), ids.size());
  EXPECT_EQ(b.finish_reason(), FinishReason::kMaxTokens);
  EXPECT_THAT(steps.back().text, HasSubstr("ju"));
  EXPECT_EQ(streamed, " the ju");
  EXPECT_EQ(b.text(), " the ju");
}

TEST_F(GenerationStateTest, MaxTokensEndsAtTheLastToken) {
  const std::vector<int32_t> ids = tokenizer_->Encode(" the jury said that");
  ASSERT_GE(ids.size(), 4u);
  ASSERT_OK_AND_ASSIGN(GenerationState state, GenerationState::Create(Greedy(3), tokenizer_, config_, 5));
  std::vector<StepResult> steps;
  const std::string streamed = Run(&state, ids, &steps);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_FALSE(steps[1].finished);
  EXPECT_TRUE(steps[2].finished);
  EXPECT_TRUE(steps[2].in_output);
  EXPECT_EQ(state.finish_reason(), FinishReason::kMaxTokens);
  EXPECT_EQ(state.output_ids(), std::vector<int32_t>(ids.begin(), ids.begin() + 3));
  EXPECT_EQ(streamed, Decode(state.output_ids()));
}

// A 12-position context and a 10-token prompt: positions 10 and 11 take the first two
// generated tokens, so the third, sampled from position 11's logits, has nowhere to go.
TEST_F(GenerationStateTest, ContextFullWhenNoPositionIsLeft) {
  config_.max_position_embeddings = 12;
  const std::vector<int32_t> ids = tokenizer_->Encode(" the jury said that the city of");
  ASSERT_GE(ids.size(), 4u);
  ASSERT_OK_AND_ASSIGN(GenerationState state, GenerationState::Create(Greedy(20), tokenizer_, config_, 10));
  std::vector<StepResult> steps;
  Run(&state, ids, &steps);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[2].finish_reason, FinishReason::kContextFull);
  EXPECT_EQ(state.output_ids().size(), 3u);
  // A prompt that fills the context leaves room for one sampled token.
  ASSERT_OK_AND_ASSIGN(GenerationState full, GenerationState::Create(Greedy(20), tokenizer_, config_, 12));
  ASSERT_OK_AND_ASSIGN(StepResult step, full.Step(Pick(ids[0])));
  EXPECT_EQ(step.finish_reason, FinishReason::kContextFull);
  EXPECT_TRUE(step.in_output);
}

TEST_F(GenerationStateTest, MaxTokensZeroIsFinishedAtOnce) {
  ASSERT_OK_AND_ASSIGN(GenerationState state, GenerationState::Create(Greedy(0), tokenizer_, config_, 5));
  EXPECT_TRUE(state.finished());
  EXPECT_EQ(state.finish_reason(), FinishReason::kMaxTokens);
  EXPECT_TRUE(state.output_ids().empty());
  EXPECT_EQ(state.text(), "");
  EXPECT_THAT(state.Step(Pick(5)), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(GenerationStateTest, CreateRejectsBadRequests) {
  auto create = [&](const GenerationOptions& o, int num_prompt) {
    return GenerationState::Create(o, tokenizer_, config_, num_prompt).status();
  };
  EXPECT_THAT(create(Greedy(-1), 5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens must be >= 0, got -1")));
  GenerationOptions o = Greedy(4);
  o.prefill_chunk_tokens = 0;
  EXPECT_THAT(create(o, 5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prefill_chunk_tokens must be >= 1, got 0")));
  o = Greedy(4);
  o.sampling.top_p = 2;
  EXPECT_THAT(create(o, 5), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_p")));
  EXPECT_THAT(create(Greedy(4), 0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the prompt has no tokens")));
  EXPECT_THAT(create(Greedy(4), 65), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("the prompt has 65 tokens, more than the model's context of 64")));
  EXPECT_OK(create(Greedy(4), 64));
}

// The same seed gives the same tokens over the same logits; another seed other tokens.
TEST_F(GenerationStateTest, SeededSamplingIsReproducible) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<std::vector<float>> logits(32, std::vector<float>(config_.vocab_size));
  for (auto& row : logits) {
    for (float& x : row) x = dist(rng);
  }
  auto sample = [&](uint64_t seed) {
    GenerationOptions o;
    o.sampling = {.temperature = 0.9, .top_k = 40, .top_p = 0.95, .seed = seed};
    o.max_tokens = 32;
    o.ignore_eos = true;
    auto state = GenerationState::Create(o, tokenizer_, config_, 5);
    EXPECT_TRUE(state.ok()) << state.status();
    for (const auto& row : logits) {
      if (state->finished()) break;
      EXPECT_OK(state->Step(row).status());
    }
    return state->output_ids();
  };
  const std::vector<int32_t> a = sample(123);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(sample(123), a);
  EXPECT_NE(sample(124), a);
}

}  // namespace
}  // namespace kvspan::model
