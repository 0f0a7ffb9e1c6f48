#include "frontend/chat_template.h"

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::frontend {
namespace {

using ::testing::HasSubstr;

const std::vector<ChatMessage> kTwo = {{"system", "Be brief."}, {"user", "Hello?"}};
const std::vector<ChatMessage> kTurns = {{"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};

TEST(ChatTemplateTest, RendersLlama3) {
  EXPECT_EQ(*RenderChat(ChatTemplate::kLlama3, kTwo),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, RendersChatMl) {
  EXPECT_EQ(*RenderChat(ChatTemplate::kChatMl, kTwo),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, RendersMistral) {
  EXPECT_EQ(*RenderChat(ChatTemplate::kMistral, kTwo), "[INST] Be brief.\n\nHello? [/INST]");
  EXPECT_EQ(*RenderChat(ChatTemplate::kMistral, kTurns), "[INST] Hi [/INST]Hello.</s>[INST] Bye [/INST]");
  absl::StatusOr<std::string> bad = RenderChat(ChatTemplate::kMistral, {{"assistant", "x"}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("alternating"));
}

TEST(ChatTemplateTest, RendersPlain) {
  EXPECT_EQ(*RenderChat(ChatTemplate::kPlain, kTwo), "System: Be brief.\nUser: Hello?\nAssistant: ");
}

TEST(ChatTemplateTest, RejectsBadMessages) {
  EXPECT_EQ(RenderChat(ChatTemplate::kPlain, {}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> tool = RenderChat(ChatTemplate::kChatMl, {{"tool", "x"}});
  EXPECT_EQ(tool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tool.status().message(), HasSubstr("messages[0].role"));
}

TEST(ChatTemplateTest, RecognisesFamiliesAndRefusesTheRest) {
  EXPECT_EQ(*RecognizeChatTemplate(std::nullopt), ChatTemplate::kPlain);
  EXPECT_EQ(*RecognizeChatTemplate("{{ '<|start_header_id|>' + message['role'] }}"), ChatTemplate::kLlama3);
  EXPECT_EQ(*RecognizeChatTemplate("{{'<|im_start|>' + message['role'] + '\\n'}}"), ChatTemplate::kChatMl);
  EXPECT_EQ(*RecognizeChatTemplate("{{ '[INST] ' + message['content'] + ' [/INST]' }}"), ChatTemplate::kMistral);
  absl::StatusOr<ChatTemplate> unknown = RecognizeChatTemplate("{{ '<start_of_turn>' + role }}");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("--chat-template"));
  EXPECT_EQ(ParseChatTemplateName("gemma").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseChatTemplateName("chatml"), ChatTemplate::kChatMl);
}

TEST(ChatTemplateTest, ForModelReadsTokenizerConfig) {
  kvspan::testing::TempDir dir;
  EXPECT_EQ(*ChatTemplateForModel(dir.path(), ""), ChatTemplate::kPlain);  // no file
  ASSERT_TRUE(WriteFile(dir.path() + "/tokenizer_config.json", R"({"chat_template": "<|im_start|>"})").ok());
  EXPECT_EQ(*ChatTemplateForModel(dir.path(), ""), ChatTemplate::kChatMl);
  EXPECT_EQ(*ChatTemplateForModel(dir.path(), "llama3"), ChatTemplate::kLlama3);  // forced
  ASSERT_TRUE(WriteFile(dir.path() + "/tokenizer_config.json",
                        R"({"chat_template": [{"name": "default", "template": "[INST]"}]})").ok());
  EXPECT_EQ(*ChatTemplateForModel(dir.path(), ""), ChatTemplate::kMistral);
  ASSERT_TRUE(WriteFile(dir.path() + "/tokenizer_config.json", R"({"chat_template": "{{ unknown }}"})").ok());
  EXPECT_EQ(ChatTemplateForModel(dir.path(), "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ChatTemplateForModel(dir.path(), "plain"), ChatTemplate::kPlain);
  ASSERT_TRUE(WriteFile(dir.path() + "/tokenizer_config.json", "{").ok());
  EXPECT_EQ(ChatTemplateForModel(dir.path(), "").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*ChatTemplateForModel(std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown", ""), ChatTemplate::kPlain);
}

}  // namespace
}  // namespace kvspan::frontend
