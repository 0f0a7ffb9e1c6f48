#include "frontend/openai_api.h"

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::frontend {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const OpenAiParseContext kContext{.model_name = "kvspan-brown", .chat_template = ChatTemplate::kPlain,
                                  .session_header = ""};

absl::StatusOr<OpenAiRequest> Completion(const std::string& body, const OpenAiParseContext& c = kContext) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body, c);
}
absl::StatusOr<OpenAiRequest> Chat(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body, kContext);
}

TEST(OpenAiApiTest, ParsesEveryCompletionField) {
  absl::StatusOr<OpenAiRequest> r = Completion(R"({"model": "kvspan-brown", "prompt": "The jury", "max_tokens": 7,
      "temperature": 0, "top_p": 0.5, "seed": 9, "stop": ["a", "b"], "n": 1, "user": "t1", "ignore_eos": true,
      "policy": "dense", "session_id": "s1", "stream": true, "stream_options": {"include_usage": true},
      "logprobs": null, "frequency_penalty": 0})");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::GenerateRequest& g = r->generate;
  EXPECT_EQ(g.text(), "The jury");
  EXPECT_EQ(g.max_tokens(), 7);
  EXPECT_EQ(g.sampling().temperature(), 0);
  EXPECT_EQ(g.sampling().top_p(), 0.5);
  EXPECT_EQ(g.sampling().seed(), 9u);
  EXPECT_THAT(g.stop(), ::testing::ElementsAre("a", "b"));
  EXPECT_EQ(g.tenant(), "t1");
  EXPECT_TRUE(g.ignore_eos());
  EXPECT_EQ(g.policy(), "dense");
  EXPECT_EQ(g.session_id(), "s1");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiApiTest, DefaultsTokenIdsStopStringAndSessionHeader) {
  OpenAiParseContext c = kContext;
  c.session_header = "from-header";
  absl::StatusOr<OpenAiRequest> r = Completion(R"({"prompt": [5, 6, 7], "stop": "x"})", c);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->generate.token_ids().ids(), ::testing::ElementsAre(5, 6, 7));
  EXPECT_THAT(r->generate.stop(), ::testing::ElementsAre("x"));
  EXPECT_FALSE(r->generate.has_max_tokens());  // the server's default
  EXPECT_FALSE(r->generate.sampling().has_temperature());
  EXPECT_EQ(r->generate.session_id(), "from-header");
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(Completion(R"({"prompt": ["one"]})")->generate.text(), "one");
  EXPECT_EQ(Completion(R"({"prompt": "p", "session_id": "body"})", c)->generate.session_id(), "body");
}

TEST(OpenAiApiTest, RejectsBadRequestsWithTheSpecificCode) {
  for (const char* body : {
           "not json", "[1]", R"({"prompt": 5})", R"({})", R"({"prompt": "p", "n": 2})",
           R"({"prompt": "p", "max_tokens": -1})", R"({"prompt": "p", "max_tokens": "7"})",
           R"({"prompt": "p", "temperature": "hot"})", R"({"prompt": "p", "seed": -3})",
           R"({"prompt": "p", "stop": [1]})", R"({"prompt": ["a", "b"]})", R"({"prompt": [1.5]})",
           R"({"prompt": "p", "stream_options": {"include_usage": true}})", R"({"prompt": "p", "user": 3})",
           R"({"prompt": "p", "ignore_eos": 1})", R"({"prompt": []})"}) {
    EXPECT_EQ(Completion(body).status().code(), absl::StatusCode::kInvalidArgument) << body;
  }
  EXPECT_THAT(Completion(R"({"prompt": "p", "n": 2})").status().message(), HasSubstr("'n'"));
  absl::StatusOr<OpenAiRequest> other = Completion(R"({"model": "gpt-4", "prompt": "p"})");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(other.status().message(), HasSubstr("gpt-4"));
  for (const char* body : {R"({"prompt": "p"})", R"({"messages": []})", R"({"messages": [{"role": "user"}]})",
                           R"({"messages": [{"role": "robot", "content": "x"}]})",
                           R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"}) {
    EXPECT_EQ(Chat(body).status().code(), absl::StatusCode::kInvalidArgument) << body;
  }
}

TEST(OpenAiApiTest, ChatRendersTheTemplateAndTakesMaxCompletionTokens) {
  absl::StatusOr<OpenAiRequest> r = Chat(R"({"messages": [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo?"}]}],
      "max_completion_tokens": 3})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.text(), "System: Be brief.\nUser: Hello?\nAssistant: ");
  EXPECT_EQ(r->generate.max_tokens(), 3);
  EXPECT_EQ(r->endpoint, OpenAiEndpoint::kChatCompletions);
}

json Merge(json a, const json& b) {
  a.update(b);
  return a;
}

CallOutcome Outcome() {
  CallOutcome o;
  o.started.set_request_id("req-1");
  o.started.set_policy("int4(g=32)");
  o.started.set_store_prompt_tokens(128);
  o.started.set_resident_prompt_tokens(0);
  o.text = "Hi.";
  o.finished.set_finish_reason(v1::FINISH_REASON_MAX_TOKENS);
  o.finished.mutable_usage()->set_prompt_tokens(150);
  o.finished.mutable_usage()->set_cached_prompt_tokens(128);
  o.finished.mutable_usage()->set_completion_tokens(4);
  o.finished.set_kv_bytes_per_token(80.5);
  return o;
}

const json kUsage = json::parse(R"j({"prompt_tokens": 150, "completion_tokens": 4, "total_tokens": 154,
    "prompt_tokens_details": {"cached_tokens": 128},
    "kvspan": {"policy": "int4(g=32)", "kv_bytes_per_token": 80.5, "store_prompt_tokens": 128,
               "resident_prompt_tokens": 0}})j");

TEST(OpenAiApiTest, CompletionResponsesHaveOpenAiShapes) {
  const CallOutcome o = Outcome();
  const ResponseIdentity text_id = MakeResponseIdentity(OpenAiEndpoint::kCompletions, o.started, "m", 1700);
  EXPECT_EQ(json::parse(CompletionResponseJson(OpenAiEndpoint::kCompletions, text_id, o)),
            Merge(json::parse(R"({"id": "cmpl-req-1", "object": "text_completion", "created": 1700, "model": "m",
                "choices": [{"index": 0, "text": "Hi.", "logprobs": null, "finish_reason": "length"}]})"),
                  {{"usage", kUsage}}));
  const ResponseIdentity chat_id = MakeResponseIdentity(OpenAiEndpoint::kChatCompletions, o.started, "m", 1700);
  EXPECT_EQ(json::parse(CompletionResponseJson(OpenAiEndpoint::kChatCompletions, chat_id, o)),
            Merge(json::parse(R"({"id": "chatcmpl-req-1", "object": "chat.completion", "created": 1700, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "logprobs": null,
                             "finish_reason": "length"}]})"),
                  {{"usage", kUsage}}));
  EXPECT_EQ(OpenAiFinishReason(v1::FINISH_REASON_STOP_TOKEN), "stop");
  EXPECT_EQ(OpenAiFinishReason(v1::FINISH_REASON_STOP_STRING), "stop");
  EXPECT_EQ(OpenAiFinishReason(v1::FINISH_REASON_CONTEXT_FULL), "length");
}

json Data(const std::string& event) {
  EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n") << event;
  return json::parse(event.substr(6, event.size() - 8));
}

TEST(OpenAiApiTest, StreamEventsHaveOpenAiShapes) {
  const CallOutcome o = Outcome();
  const ResponseIdentity id = MakeResponseIdentity(OpenAiEndpoint::kChatCompletions, o.started, "m", 1700);
  const json head = R"({"id": "chatcmpl-req-1", "object": "chat.completion.chunk", "created": 1700, "model": "m"})"_json;
  EXPECT_EQ(Data(StreamRoleEvent(id)),
            Merge(head, R"({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}]})"_json));
  EXPECT_EQ(Data(StreamTextEvent(OpenAiEndpoint::kChatCompletions, id, "Hi")),
            Merge(head, R"({"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": null,
                "finish_reason": null}]})"_json));
  EXPECT_EQ(Data(StreamFinishEvent(OpenAiEndpoint::kChatCompletions, id, o.finished)),
            Merge(head, R"({"choices": [{"index": 0, "delta": {}, "logprobs": null,
                "finish_reason": "length"}]})"_json));
  EXPECT_EQ(Data(StreamUsageEvent(OpenAiEndpoint::kChatCompletions, id, o)),
            Merge(head, {{"choices", json::array()}, {"usage", kUsage}}));
  const ResponseIdentity text_id = MakeResponseIdentity(OpenAiEndpoint::kCompletions, o.started, "m", 1700);
  EXPECT_EQ(Data(StreamTextEvent(OpenAiEndpoint::kCompletions, text_id, "Hi")),
            R"({"id": "cmpl-req-1", "object": "text_completion", "created": 1700, "model": "m",
                "choices": [{"index": 0, "text": "Hi", "logprobs": null, "finish_reason": null}]})"_json);
  EXPECT_EQ(StreamDoneEvent(), "data: [DONE]\n\n");
  EXPECT_EQ(json::parse(ModelListJson("m", 5)),
            R"({"object": "list", "data": [{"id": "m", "object": "model", "created": 5, "owned_by": "kvspan"}]})"_json);
}

TEST(OpenAiApiTest, ErrorsMapToHttpCodesAndOpenAiShape) {
  const std::vector<std::pair<absl::StatusCode, int>> map = {
      {absl::StatusCode::kInvalidArgument, 400}, {absl::StatusCode::kOutOfRange, 400},
      {absl::StatusCode::kUnauthenticated, 401}, {absl::StatusCode::kPermissionDenied, 403},
      {absl::StatusCode::kNotFound, 404},        {absl::StatusCode::kFailedPrecondition, 409},
      {absl::StatusCode::kResourceExhausted, 429}, {absl::StatusCode::kCancelled, 499},
      {absl::StatusCode::kUnimplemented, 501},   {absl::StatusCode::kUnavailable, 503},
      {absl::StatusCode::kDeadlineExceeded, 504}, {absl::StatusCode::kInternal, 500},
      {absl::StatusCode::kDataLoss, 500},        {absl::StatusCode::kUnknown, 500}};
  for (const auto& [code, http] : map) EXPECT_EQ(HttpStatusOf(code), http) << absl::StatusCodeToString(code);
  EXPECT_EQ(json::parse(ErrorJson(absl::InvalidArgumentError("'n' must be 1"))),
            R"({"error": {"message": "'n' must be 1", "type": "invalid_request_error", "param": null,
                "code": "invalid_argument"}})"_json);
  EXPECT_EQ(json::parse(ErrorJson(absl::ResourceExhaustedError("queue full")))["error"]["type"], "rate_limit_error");
  EXPECT_EQ(json::parse(ErrorJson(absl::NotFoundError("no")))["error"]["code"], "not_found");
}

}  // namespace
}  // namespace kvspan::frontend
