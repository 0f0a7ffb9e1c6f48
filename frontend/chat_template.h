// Chat templates: how an OpenAI chat request's messages become one prompt string. kvspan
// does not run Jinja; it recognises the common families in tokenizer_config.json's
// `chat_template` and renders them in C++:
//   llama3   <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|> ... then
//            <|start_header_id|>assistant<|end_header_id|>\n\n (content trimmed, as Llama 3's)
//   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n ... then <|im_start|>assistant\n (Qwen2;
//            no default system message is added)
//   mistral  [INST] USER [/INST]ASSISTANT</s>[INST] ... [/INST] (a system message goes in
//            front of the first user message, separated by "\n\n"; roles must alternate)
//   plain    System: ...\nUser: ...\nAssistant: ...\n ... then "Assistant: " — for models
//            without a template (the shipped kvspan-brown)
// bos is never rendered: the tokenizer adds it at the start of a sequence (add_bos).
// Thread-safe (pure functions).
#ifndef KVSPAN_FRONTEND_CHAT_TEMPLATE_H_
#define KVSPAN_FRONTEND_CHAT_TEMPLATE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvspan::frontend {

enum class ChatTemplate { kLlama3, kChatMl, kMistral, kPlain };

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// "llama3", "chatml", "mistral", "plain".
absl::string_view ChatTemplateName(ChatTemplate chat_template);
// The template named `name`; InvalidArgument naming the choices otherwise.
absl::StatusOr<ChatTemplate> ParseChatTemplateName(absl::string_view name);

// The family of a Jinja chat_template, by its markers (<|start_header_id|>, <|im_start|>,
// [INST]); nullopt (no template) is plain. InvalidArgument when none is recognised: the
// message says to pass --chat-template.
absl::StatusOr<ChatTemplate> RecognizeChatTemplate(const std::optional<std::string>& jinja);

// The template for the model in `model_dir`: `forced_name` when non-empty, else recognised
// from model_dir/tokenizer_config.json's chat_template (a string, or a list of {name,
// template} whose "default" is used); no file or no chat_template is plain. Errors:
// InvalidArgument (a bad name, an unrecognised template), DataLoss (the file is not JSON).
absl::StatusOr<ChatTemplate> ChatTemplateForModel(const std::string& model_dir, absl::string_view forced_name);

// The prompt for `messages`, ending where the assistant's answer begins. InvalidArgument
// for no messages, an unknown role, or (mistral) roles that do not alternate user/assistant.
absl::StatusOr<std::string> RenderChat(ChatTemplate chat_template, const std::vector<ChatMessage>& messages);

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_CHAT_TEMPLATE_H_
