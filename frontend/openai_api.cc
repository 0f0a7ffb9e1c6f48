#include "frontend/openai_api.h"

#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace kvspan::frontend {
namespace {

using nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("'", field, "' ", what));
}

// The field when present and not null.
const json* Field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

absl::Status SetString(const json& body, const char* name, std::string* out) {
  const json* f = Field(body, name);
  if (f == nullptr) return absl::OkStatus();
  if (!f->is_string()) return Bad(name, "must be a string");
  *out = f->get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseStop(const json& body, v1::GenerateRequest* r) {
  const json* f = Field(body, "stop");
  if (f == nullptr) return absl::OkStatus();
  if (f->is_string()) {
    r->add_stop(f->get<std::string>());
    return absl::OkStatus();
  }
  if (!f->is_array()) return Bad("stop", "must be a string or an array of strings");
  for (const json& s : *f) {
    if (!s.is_string()) return Bad("stop", "must be a string or an array of strings");
    r->add_stop(s.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const json& body, OpenAiEndpoint endpoint, v1::GenerateRequest* r) {
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (endpoint == OpenAiEndpoint::kCompletions && name[4] == 'c') continue;  // chat only
    const json* f = Field(body, name);
    if (f == nullptr) continue;
    if (!f->is_number_integer() || f->get<int64_t>() < 0 || f->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Bad(name, "must be an integer >= 0");
    }
    r->set_max_tokens(static_cast<int32_t>(f->get<int64_t>()));
  }
  for (const char* name : {"temperature", "top_p"}) {
    const json* f = Field(body, name);
    if (f == nullptr) continue;
    if (!f->is_number()) return Bad(name, "must be a number");
    if (name[0] == 't' && name[1] == 'e') r->mutable_sampling()->set_temperature(f->get<double>());
    else r->mutable_sampling()->set_top_p(f->get<double>());
  }
  if (const json* f = Field(body, "seed")) {
    if (!f->is_number_unsigned()) return Bad("seed", "must be an integer >= 0");
    r->mutable_sampling()->set_seed(f->get<uint64_t>());
  }
  if (const json* f = Field(body, "n")) {
    if (!f->is_number_integer() || f->get<int64_t>() != 1) return Bad("n", "must be 1 (kvspan returns one choice)");
  }
  if (const json* f = Field(body, "ignore_eos")) {
    if (!f->is_boolean()) return Bad("ignore_eos", "must be a boolean");
    r->set_ignore_eos(f->get<bool>());
  }
  return ParseStop(body, r);
}

absl::Status ParsePrompt(const json& body, v1::GenerateRequest* r) {
  const json* f = Field(body, "prompt");
  if (f == nullptr) return Bad("prompt", "is required");
  if (f->is_string()) {
    r->set_text(f->get<std::string>());
    return absl::OkStatus();
  }
  if (f->is_array() && f->size() == 1 && (*f)[0].is_string()) {
    r->set_text((*f)[0].get<std::string>());
    return absl::OkStatus();
  }
  if (!f->is_array() || f->empty()) return Bad("prompt", "must be a string or an array of token ids");
  v1::TokenIds* ids = r->mutable_token_ids();
  for (const json& id : *f) {
    if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Bad("prompt", "must be a string or an array of token ids (one prompt only)");
    }
    ids->add_ids(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const json& body, ChatTemplate chat_template, v1::GenerateRequest* r) {
  const json* f = Field(body, "messages");
  if (f == nullptr || !f->is_array()) return Bad("messages", "is required: an array of {role, content}");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < f->size(); ++i) {
    const json& m = (*f)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Bad(where, "must be an object");
    ChatMessage message;
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) return Bad(where + ".role", "must be a string");
    message.role = role->get<std::string>();
    const json* content = Field(m, "content");
    if (content != nullptr && content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content != nullptr && content->is_array()) {
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Bad(where + ".content", "parts must be {\"type\": \"text\", \"text\": ...}");
        }
        message.content += part["text"].get<std::string>();
      }
    } else {
      return Bad(where + ".content", "must be a string or an array of text parts");
    }
    messages.push_back(std::move(message));
  }
  absl::StatusOr<std::string> text = RenderChat(chat_template, messages);
  if (!text.ok()) return text.status();
  r->set_text(*std::move(text));
  return absl::OkStatus();
}

json Usage(const CallOutcome& o) {
  const v1::Usage& u = o.finished.usage();
  return {{"prompt_tokens", u.prompt_tokens()},
          {"completion_tokens", u.completion_tokens()},
          {"total_tokens", u.prompt_tokens() + u.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens()}}},
          {"kvspan",
           {{"policy", o.started.policy()},
            {"kv_bytes_per_token", o.finished.kv_bytes_per_token()},
            {"store_prompt_tokens", o.started.store_prompt_tokens()},
            {"resident_prompt_tokens", o.started.resident_prompt_tokens()}}}};
}

json Envelope(OpenAiEndpoint endpoint, const ResponseIdentity& identity, bool chunk) {
  const char* object = endpoint == OpenAiEndpoint::kCompletions ? "text_completion"
                       : chunk                                  ? "chat.completion.chunk"
                                                                : "chat.completion";
  return {{"id", identity.id}, {"object", object}, {"created", identity.created}, {"model", identity.model}};
}

std::string Event(const json& chunk) {
  return absl::StrCat("data: ", chunk.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n");
}

// One choice chunk. `delta` is chat's delta; completions carry its content (or "") as text.
std::string ChunkEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, const json& delta,
                       const v1::Finished* finished) {
  json chunk = Envelope(endpoint, identity, /*chunk=*/true);
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  choice["finish_reason"] =
      finished != nullptr ? json(std::string(OpenAiFinishReason(finished->finish_reason()))) : json(nullptr);
  if (endpoint == OpenAiEndpoint::kCompletions) {
    choice["text"] = delta.value("content", "");
  } else {
    choice["delta"] = delta;
  }
  chunk["choices"] = json::array({choice});
  return Event(chunk);
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, absl::string_view body_text,
                                                 const OpenAiParseContext& context) {
  const json body = json::parse(body_text.begin(), body_text.end(), nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return absl::InvalidArgumentError("the request body is not a JSON object");
  }
  OpenAiRequest out;
  out.endpoint = endpoint;
  v1::GenerateRequest& r = out.generate;
  std::string model, tenant, policy, session_id = context.session_header;
  if (absl::Status s = SetString(body, "model", &model); !s.ok()) return s;
  if (!model.empty() && model != context.model_name) {
    return absl::NotFoundError(absl::StrCat("the model '", model, "' does not exist; this server serves '",
                                            context.model_name, "'"));
  }
  for (auto [name, field] : {std::pair{"user", &tenant}, {"policy", &policy}, {"session_id", &session_id}}) {
    if (absl::Status s = SetString(body, name, field); !s.ok()) return s;
  }
  r.set_tenant(tenant);
  r.set_policy(policy);
  r.set_session_id(session_id);
  if (const json* f = Field(body, "stream")) {
    if (!f->is_boolean()) return Bad("stream", "must be a boolean");
    out.stream = f->get<bool>();
  }
  if (const json* f = Field(body, "stream_options")) {
    if (!f->is_object()) return Bad("stream_options", "must be an object");
    if (!out.stream) return Bad("stream_options", "is only allowed with stream: true");
    if (const json* u = Field(*f, "include_usage")) {
      if (!u->is_boolean()) return Bad("stream_options.include_usage", "must be a boolean");
      out.include_usage = u->get<bool>();
    }
  }
  if (absl::Status s = ParseSampling(body, endpoint, &r); !s.ok()) return s;
  absl::Status prompt = endpoint == OpenAiEndpoint::kCompletions ? ParsePrompt(body, &r)
                                                                 : ParseMessages(body, context.chat_template, &r);
  if (!prompt.ok()) return prompt;
  return out;
}

ResponseIdentity MakeResponseIdentity(OpenAiEndpoint endpoint, const v1::Started& started,
                                      const std::string& model_name, int64_t created) {
  return {absl::StrCat(endpoint == OpenAiEndpoint::kCompletions ? "cmpl-" : "chatcmpl-", started.request_id()),
          created, model_name};
}

absl::string_view OpenAiFinishReason(v1::FinishReason reason) {
  return reason == v1::FINISH_REASON_MAX_TOKENS || reason == v1::FINISH_REASON_CONTEXT_FULL ? "length" : "stop";
}

std::string CompletionResponseJson(OpenAiEndpoint endpoint, const ResponseIdentity& identity,
                                   const CallOutcome& outcome) {
  json r = Envelope(endpoint, identity, /*chunk=*/false);
  json choice = {{"index", 0}, {"finish_reason", OpenAiFinishReason(outcome.finished.finish_reason())}};
  if (endpoint == OpenAiEndpoint::kCompletions) {
    choice["text"] = outcome.text;
    choice["logprobs"] = nullptr;
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", outcome.text}};
    choice["logprobs"] = nullptr;
  }
  r["choices"] = json::array({choice});
  r["usage"] = Usage(outcome);
  return r.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string StreamRoleEvent(const ResponseIdentity& identity) {
  return ChunkEvent(OpenAiEndpoint::kChatCompletions, identity, {{"role", "assistant"}, {"content", ""}}, nullptr);
}

std::string StreamTextEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, absl::string_view text) {
  return ChunkEvent(endpoint, identity, {{"content", std::string(text)}}, nullptr);
}

std::string StreamFinishEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, const v1::Finished& finished) {
  return ChunkEvent(endpoint, identity, json::object(), &finished);
}

std::string StreamUsageEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, const CallOutcome& outcome) {
  json chunk = Envelope(endpoint, identity, /*chunk=*/true);
  chunk["choices"] = json::array();
  chunk["usage"] = Usage(outcome);
  return Event(chunk);
}

std::string StreamDoneEvent() { return "data: [DONE]\n\n"; }

std::string ModelListJson(const std::string& model_name, int64_t created) {
  const json model = {{"id", model_name}, {"object", "model"}, {"created", created}, {"owned_by", "kvspan"}};
  return json({{"object", "list"}, {"data", json::array({model})}})
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kFailedPrecondition: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  const int http = HttpStatusOf(status.code());
  // 401 as OpenAI answers a bad key: invalid_request_error, code invalid_api_key.
  const char* type = http == 400 || http == 401 || http == 409 ? "invalid_request_error"
                     : http == 404              ? "not_found_error"
                     : http == 429              ? "rate_limit_error"
                     : http == 503              ? "service_unavailable"
                     : http == 504              ? "timeout_error"
                                                : "server_error";
  json error = {{"message", std::string(status.message())},
                {"type", type},
                {"param", nullptr},
                {"code", http == 401 ? std::string("invalid_api_key")
                                     : absl::AsciiStrToLower(absl::StatusCodeToString(status.code()))}};
  return json({{"error", error}}).dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace kvspan::frontend
