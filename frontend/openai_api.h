// The OpenAI-compatible HTTP API's translation, as pure functions: a JSON body of
// POST /v1/completions or /v1/chat/completions to a v1::GenerateRequest, the call's
// messages to OpenAI's response objects and server-sent-event chunks, and an absl::Status
// to OpenAI's error object and its HTTP code. The routes (frontend/openai_routes.h) do the
// I/O; ServingService::Run does the work.
//
// Fields: model (must be the served model when set; else NotFound), prompt (a string, an
// array of token ids, or an array of one string; completions), messages (chat: role and a
// string content or an array of {type: "text", text} parts), max_tokens (and, for chat,
// max_completion_tokens), temperature, top_p, seed (>= 0), stop (a string or an array),
// n (1 only), user (the tenant that salts the cache store), ignore_eos (vLLM's), stream,
// stream_options.include_usage, and kvspan's policy and session_id (with a session the
// prompt is the new turn). Unknown fields are ignored, as OpenAI's clients send many.
// Thread-safe (pure functions).
#ifndef KVSPAN_FRONTEND_OPENAI_API_H_
#define KVSPAN_FRONTEND_OPENAI_API_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "frontend/chat_template.h"
#include "kvspan/v1/serving.pb.h"

namespace kvspan::frontend {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// One parsed request.
struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  v1::GenerateRequest generate;  // what ServingService::Run gets
  bool stream = false;
  bool include_usage = false;    // stream_options.include_usage
};

// What the request is parsed against.
struct OpenAiParseContext {
  std::string model_name;                      // the served model (GET /v1/models id)
  ChatTemplate chat_template = ChatTemplate::kPlain;
  std::string session_header;                  // X-Session-Id; the body's session_id wins
};

// InvalidArgument for a body that is not a JSON object, a field of the wrong type or value,
// n != 1, a missing prompt or messages; NotFound for another model.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, absl::string_view body,
                                                 const OpenAiParseContext& context);

// Everything one call streamed, as ServingService::Run wrote it.
struct CallOutcome {
  v1::Started started;
  std::string text;     // the Tokens' text, concatenated
  v1::Finished finished;
};

// Identifies one response: its id ("cmpl-..." / "chatcmpl-..." + the request id) and
// created (Unix seconds), the same in every chunk of a stream.
struct ResponseIdentity {
  std::string id;
  int64_t created = 0;
  std::string model;
};
ResponseIdentity MakeResponseIdentity(OpenAiEndpoint endpoint, const v1::Started& started,
                                      const std::string& model_name, int64_t created);

// "stop" (a stop token or string) or "length" (max_tokens, the context full).
absl::string_view OpenAiFinishReason(v1::FinishReason reason);

// The whole (stream: false) response: a text_completion or chat.completion object.
std::string CompletionResponseJson(OpenAiEndpoint endpoint, const ResponseIdentity& identity,
                                   const CallOutcome& outcome);

// Server-sent events, each "data: " + one chunk + "\n\n":
// The chat stream's first chunk: a delta with role "assistant" and empty content.
std::string StreamRoleEvent(const ResponseIdentity& identity);
// Text that became final: choices[0].text (completions) or .delta.content (chat).
std::string StreamTextEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, absl::string_view text);
// The last choice chunk: finish_reason, with an empty text (completions) or delta (chat).
std::string StreamFinishEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, const v1::Finished& finished);
// The include_usage chunk: empty choices and usage.
std::string StreamUsageEvent(OpenAiEndpoint endpoint, const ResponseIdentity& identity, const CallOutcome& outcome);
// "data: [DONE]\n\n".
std::string StreamDoneEvent();

// GET /v1/models: {"object": "list", "data": [{"id": model_name, "object": "model", ...}]}.
std::string ModelListJson(const std::string& model_name, int64_t created);

// The HTTP status of an error code: InvalidArgument and OutOfRange 400, Unauthenticated 401,
// PermissionDenied 403, NotFound 404, FailedPrecondition 409, ResourceExhausted 429,
// Cancelled 499, Unimplemented 501, Unavailable 503, DeadlineExceeded 504, the rest 500.
int HttpStatusOf(absl::StatusCode code);
// {"error": {"message", "type", "param": null, "code"}}; code is the lower-case code name,
// except Unauthenticated's, "invalid_api_key" as OpenAI sends it.
std::string ErrorJson(const absl::Status& status);

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_OPENAI_API_H_
