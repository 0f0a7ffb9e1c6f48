#include "frontend/chat_template.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace kvspan::frontend {
namespace {

absl::Status CheckRole(const ChatMessage& m, size_t i) {
  if (m.role == "system" || m.role == "user" || m.role == "assistant") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("messages[", i, "].role is '", m.role, "'; expected system, user or assistant"));
}

absl::StatusOr<std::string> RenderMistral(const std::vector<ChatMessage>& messages) {
  std::string out, system;
  size_t i = 0;
  if (messages[0].role == "system") {
    system = messages[0].content + "\n\n";
    i = 1;
  }
  for (bool user_turn = true; i < messages.size(); ++i, user_turn = !user_turn) {
    const ChatMessage& m = messages[i];
    if (m.role != (user_turn ? "user" : "assistant")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the mistral chat template needs user and assistant messages alternating, starting with user (after an "
          "optional system message); messages[", i, "] is ", m.role));
    }
    if (user_turn) {
      absl::StrAppend(&out, "[INST] ", system, m.content, " [/INST]");
      system.clear();
    } else {
      absl::StrAppend(&out, m.content, "</s>");
    }
  }
  return out;
}

}  // namespace

absl::string_view ChatTemplateName(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::kLlama3: return "llama3";
    case ChatTemplate::kChatMl: return "chatml";
    case ChatTemplate::kMistral: return "mistral";
    case ChatTemplate::kPlain: return "plain";
  }
  return "plain";
}

absl::StatusOr<ChatTemplate> ParseChatTemplateName(absl::string_view name) {
  for (ChatTemplate t : {ChatTemplate::kLlama3, ChatTemplate::kChatMl, ChatTemplate::kMistral, ChatTemplate::kPlain}) {
    if (name == ChatTemplateName(t)) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--chat-template '", name, "' is not one of llama3, chatml, mistral, plain"));
}

absl::StatusOr<ChatTemplate> RecognizeChatTemplate(const std::optional<std::string>& jinja) {
  if (!jinja.has_value()) return ChatTemplate::kPlain;
  if (jinja->find("<|start_header_id|>") != std::string::npos) return ChatTemplate::kLlama3;
  if (jinja->find("<|im_start|>") != std::string::npos) return ChatTemplate::kChatMl;
  if (jinja->find("[INST]") != std::string::npos) return ChatTemplate::kMistral;
  return absl::InvalidArgumentError(
      "tokenizer_config.json has a chat_template kvspan does not recognise (it knows Llama 3, ChatML/Qwen2 and "
      "Mistral [INST]); pass --chat-template llama3|chatml|mistral|plain");
}

absl::StatusOr<ChatTemplate> ChatTemplateForModel(const std::string& model_dir, absl::string_view forced_name) {
  if (!forced_name.empty()) return ParseChatTemplateName(forced_name);
  const std::string path = model_dir + "/tokenizer_config.json";
  if (!FileExists(path)) return ChatTemplate::kPlain;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  const nlohmann::json config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return absl::DataLossError(absl::StrCat(path, " is not JSON"));
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return ChatTemplate::kPlain;
  if (it->is_string()) return RecognizeChatTemplate(it->get<std::string>());
  if (it->is_array()) {
    for (const nlohmann::json& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return RecognizeChatTemplate(entry["template"].get<std::string>());
      }
    }
  }
  return RecognizeChatTemplate(std::string());  // present, not usable: the same clear error
}

absl::StatusOr<std::string> RenderChat(ChatTemplate chat_template, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return absl::InvalidArgumentError("messages is empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    if (absl::Status s = CheckRole(messages[i], i); !s.ok()) return s;
  }
  std::string out;
  switch (chat_template) {
    case ChatTemplate::kLlama3:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                        absl::StripAsciiWhitespace(m.content), "<|eot_id|>");
      }
      absl::StrAppend(&out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
      return out;
    case ChatTemplate::kChatMl:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      absl::StrAppend(&out, "<|im_start|>assistant\n");
      return out;
    case ChatTemplate::kMistral:
      return RenderMistral(messages);
    case ChatTemplate::kPlain:
      for (const ChatMessage& m : messages) {
        const char* name = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
        absl::StrAppend(&out, name, ": ", m.content, "\n");
      }
      absl::StrAppend(&out, "Assistant: ");
      return out;
  }
  return absl::InternalError("unknown chat template");
}

}  // namespace kvspan::frontend
