#include "model/config.h"

#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/testing/random_checkpoint.h"
#include "nlohmann/json.hpp"

namespace kvspan::model {
namespace {

using ::kvspan::testing::IsOk;
using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using nlohmann::json;

// The config.json of meta-llama/Llama-3.2-1B, as published.
json Llama32Config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

json Qwen2Config() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643,
    "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864,
    "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
    "use_sliding_window": false, "vocab_size": 151936})");
}

json MistralConfig() {
  return json::parse(R"({
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
    "vocab_size": 32000})");
}

absl::StatusOr<ModelConfig> Parse(const json& j) { return ModelConfig::FromJson(j.dump()); }

TEST(ModelConfigTest, ParsesLlama32) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, Parse(Llama32Config()));
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_layers, 16);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_THAT(c.bos_token_ids, ElementsAre(128000));
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001));
  EXPECT_EQ(c.fingerprint.size(), 32u);
}

TEST(ModelConfigTest, Qwen2HasQkvBiasAndDerivedHeadDim) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, Parse(Qwen2Config()));
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
}

TEST(ModelConfigTest, MistralSlidingWindow) {
  json j = MistralConfig();
  ASSERT_OK_AND_ASSIGN(ModelConfig c, Parse(j));
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.head_dim, 128);
  j["sliding_window"] = nullptr;
  ASSERT_OK_AND_ASSIGN(c, Parse(j));
  EXPECT_EQ(c.sliding_window, 0);
  j.erase("sliding_window");  // MistralConfig's default
  ASSERT_OK_AND_ASSIGN(c, Parse(j));
  EXPECT_EQ(c.sliding_window, 4096);
}

TEST(ModelConfigTest, DefaultsKvHeadsAndHeadDim) {
  json j = Llama32Config();
  j.erase("num_key_value_heads");
  j.erase("head_dim");
  j.erase("rope_scaling");
  ASSERT_OK_AND_ASSIGN(ModelConfig c, Parse(j));
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(ModelConfigTest, UnknownArchitectureIsInvalidArgument) {
  json j = Llama32Config();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("GPT2LMHeadModel")));
}

TEST(ModelConfigTest, NotJsonIsInvalidArgument) {
  EXPECT_THAT(ModelConfig::FromJson("{\"vocab_size\": "), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ModelConfig::FromJson("[1, 2]"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ModelConfigTest, MissingFieldIsInvalidArgument) {
  json j = Llama32Config();
  j.erase("hidden_size");
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hidden_size")));
}

TEST(ModelConfigTest, FieldOutOfRangeIsInvalidArgument) {
  for (const char* field : {"vocab_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"}) {
    json j = Llama32Config();
    j[field] = 0;
    EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field))) << field;
  }
  json j = Llama32Config();
  j["rms_norm_eps"] = -1.0;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rms_norm_eps")));
  j = Llama32Config();
  j["hidden_size"] = "2048";
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hidden_size")));
  j = Llama32Config();
  j["eos_token_id"] = 128256;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eos_token_id")));
}

TEST(ModelConfigTest, InconsistentHeadsAreInvalidArgument) {
  json j = Llama32Config();
  j["num_key_value_heads"] = 5;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_key_value_heads")));
  j = Llama32Config();
  j.erase("head_dim");
  j["hidden_size"] = 2050;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hidden_size")));
  j = Llama32Config();
  j["head_dim"] = 63;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head_dim")));
}

TEST(ModelConfigTest, UnsupportedFeaturesAreInvalidArgument) {
  json j = Llama32Config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("linear")));
  j = Llama32Config();
  j["rope_scaling"].erase("low_freq_factor");
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("low_freq_factor")));
  j = Llama32Config();
  j["attention_bias"] = true;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("attention_bias")));
  j = Llama32Config();
  j["hidden_act"] = "gelu";
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hidden_act")));
  j = Qwen2Config();
  j["use_sliding_window"] = true;
  EXPECT_THAT(Parse(j), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("use_sliding_window")));
}

TEST(ModelConfigTest, GenerationConfigAddsEosIds) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, Parse(Llama32Config()));
  ASSERT_OK(c.MergeGenerationConfig(R"({"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})"));
  EXPECT_THAT(c.bos_token_ids, ElementsAre(128000));
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_THAT(c.MergeGenerationConfig(R"({"eos_token_id": [-1]})"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.MergeGenerationConfig("not json"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ModelConfigTest, FingerprintIsStableAndChangesWithContent) {
  const std::string text = Llama32Config().dump();
  ASSERT_OK_AND_ASSIGN(ModelConfig a, ModelConfig::FromJson(text));
  ASSERT_OK_AND_ASSIGN(ModelConfig b, ModelConfig::FromJson(text));
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  json j = Llama32Config();
  j["rope_theta"] = 500001.0;
  ASSERT_OK_AND_ASSIGN(ModelConfig c, Parse(j));
  EXPECT_NE(a.fingerprint, c.fingerprint);
  EXPECT_EQ(a.kv_bytes_per_token(), 2 * 16 * 8 * 64 * 4);
}

// tools/make_random_model --shape llama-3.2-1b writes the published geometry.
TEST(ModelConfigTest, RandomLlama32ShapeMatchesPublishedConfig) {
  ASSERT_OK_AND_ASSIGN(testing::RandomCheckpointOptions o, testing::NamedShape("llama-3.2-1b"));
  ASSERT_OK_AND_ASSIGN(ModelConfig got, ModelConfig::FromJson(testing::RandomCheckpointConfigJson(o)));
  ASSERT_OK_AND_ASSIGN(ModelConfig want, Parse(Llama32Config()));
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.hidden_size, want.hidden_size);
  EXPECT_EQ(got.intermediate_size, want.intermediate_size);
  EXPECT_EQ(got.num_layers, want.num_layers);
  EXPECT_EQ(got.num_heads, want.num_heads);
  EXPECT_EQ(got.num_kv_heads, want.num_kv_heads);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.max_position_embeddings, want.max_position_embeddings);
  EXPECT_EQ(got.rope_theta, want.rope_theta);
  EXPECT_EQ(got.rope_scaling.type, want.rope_scaling.type);
  EXPECT_EQ(got.rope_scaling.factor, want.rope_scaling.factor);
  EXPECT_EQ(got.rope_scaling.low_freq_factor, want.rope_scaling.low_freq_factor);
  EXPECT_EQ(got.rope_scaling.high_freq_factor, want.rope_scaling.high_freq_factor);
  EXPECT_EQ(got.rope_scaling.original_max_position_embeddings, want.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(got.tie_word_embeddings, want.tie_word_embeddings);
  EXPECT_THAT(testing::NamedShape("llama-70b"), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace kvspan::model
