// `kvspan serve --http-listen` as its own process, spoken to as an OpenAI server: the
// non-streaming and streaming routes over a real socket (httplib::Client) against the same
// request over gRPC, sessions by header, errors in OpenAI's shape with their HTTP codes, a
// client that disconnects mid-stream, and the official `openai` npm client
// (tests/openai_js/check.mjs, installed by tools/setup.sh).
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "tests/run_command.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

using kvspan::testing::TempDir;
using nlohmann::json;
using ::testing::HasSubstr;

const std::string kBinary = KVSPAN_COMMAND;
const std::string kSource = KVSPAN_SOURCE_DIR;
const std::string kModel = kSource + "/models/kvspan-brown";

class ServeOpenAiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServeProcess>(
        kBinary, std::vector<std::string>{"--model", kModel, "--data", dir_.Sub("data"), "--threads", "2",
                                          "--grace-ms", "60000", "--http-listen", "127.0.0.1:0"});
    ASSERT_FALSE(server_->address().empty()) << "kvspan serve did not come up";
    ASSERT_FALSE(server_->http_address().empty());
    http_ = NewClient();
    stub_ = server_->NewStub();
  }

  std::unique_ptr<httplib::Client> NewClient() {
    const size_t colon = server_->http_address().rfind(':');
    int port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(server_->http_address().substr(colon + 1), &port));
    auto client = std::make_unique<httplib::Client>(server_->http_address().substr(0, colon), port);
    client->set_read_timeout(std::chrono::seconds(120));
    return client;
  }

  // POSTs `body`; the status and the parsed body (null when not JSON).
  std::pair<int, json> Post(const std::string& path, const json& body, const httplib::Headers& headers = {}) {
    httplib::Result r = http_->Post(path, headers, body.dump(), "application/json");
    EXPECT_TRUE(r) << httplib::to_string(r.error());
    if (!r) return {0, nullptr};
    return {r->status, json::parse(r->body, nullptr, false)};
  }

  TempDir dir_;
  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<v1::Serving::Stub> stub_;
};

json IdsJson(const std::vector<int32_t>& ids) { return json(ids); }

TEST_F(ServeOpenAiTest, CompletionMatchesGrpcAndStreamsTheSameText) {
  const std::vector<int32_t> prompt = PromptIds(1, 20);
  const GenerateOutcome grpc = RunGenerate(*stub_, GreedyRequest(prompt, 6, "", ""));
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  const json request = {{"model", "kvspan-brown"}, {"prompt", IdsJson(prompt)}, {"max_tokens", 6},
                        {"temperature", 0}, {"ignore_eos", true}};
  auto [status, body] = Post("/v1/completions", request);
  ASSERT_EQ(status, 200) << body;
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "kvspan-brown");
  EXPECT_THAT(body["id"].get<std::string>(), ::testing::StartsWith("cmpl-"));
  EXPECT_EQ(body["choices"][0]["text"], grpc.text);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 20);
  EXPECT_EQ(body["usage"]["completion_tokens"], 6);
  EXPECT_EQ(body["usage"]["total_tokens"], 26);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(body["usage"]["kvspan"]["policy"], grpc.started.policy());
  EXPECT_GT(body["usage"]["kvspan"]["kv_bytes_per_token"].get<double>(), 0);

  json stream_request = request;
  stream_request["stream"] = true;
  stream_request["stream_options"] = {{"include_usage", true}};
  httplib::Result r = http_->Post("/v1/completions", stream_request.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  std::vector<std::string> events = absl::StrSplit(r->body, "\n\n", absl::SkipEmpty());
  ASSERT_GE(events.size(), 3u) << r->body;
  EXPECT_EQ(events.back(), "data: [DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].rfind("data: ", 0), 0u) << events[i];
    const json chunk = json::parse(events[i].substr(6));
    if (i + 2 == events.size()) {  // the include_usage chunk
      EXPECT_TRUE(chunk["choices"].empty());
      EXPECT_EQ(chunk["usage"]["completion_tokens"], 6);
      continue;
    }
    text += chunk["choices"][0]["text"].get<std::string>();
    EXPECT_EQ(chunk["choices"][0]["finish_reason"].is_null(), i + 3 < events.size()) << events[i];
  }
  EXPECT_EQ(text, grpc.text);

  httplib::Result models = http_->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "kvspan-brown");
}

TEST_F(ServeOpenAiTest, ChatUsesThePlainTemplate) {
  absl::StatusOr<std::unique_ptr<model::Tokenizer>> tokenizer = model::Tokenizer::LoadFromDir(kModel);
  ASSERT_TRUE(tokenizer.ok());
  const size_t prompt_tokens = (*tokenizer)->EncodeForGeneration("User: The jury said\nAssistant: ").size();
  v1::GenerateRequest grpc_request;
  grpc_request.set_text("User: The jury said\nAssistant: ");
  grpc_request.mutable_sampling()->set_temperature(0);
  grpc_request.set_max_tokens(5);
  grpc_request.set_ignore_eos(true);
  const GenerateOutcome grpc = RunGenerate(*stub_, grpc_request);
  ASSERT_TRUE(grpc.status.ok());
  auto [status, body] = Post("/v1/chat/completions",
                             {{"messages", {{{"role", "user"}, {"content", "The jury said"}}}},
                              {"max_completion_tokens", 5}, {"temperature", 0}, {"ignore_eos", true}});
  ASSERT_EQ(status, 200) << body;
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], grpc.text);
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt_tokens);
}

TEST_F(ServeOpenAiTest, SessionByHeaderReusesTheResidentHistory) {
  grpc::ClientContext context;
  v1::OpenSessionResponse opened;
  ASSERT_TRUE(stub_->OpenSession(&context, v1::OpenSessionRequest(), &opened).ok());
  const httplib::Headers headers = {{"X-Session-Id", opened.session_id()}};
  const json turn = {{"prompt", IdsJson(PromptIds(1, 70))}, {"max_tokens", 4}, {"temperature", 0},
                     {"ignore_eos", true}};
  auto [s1, first] = Post("/v1/completions", turn, headers);
  ASSERT_EQ(s1, 200) << first;
  auto [s2, second] = Post("/v1/completions", turn, headers);
  ASSERT_EQ(s2, 200) << second;
  EXPECT_EQ(second["usage"]["prompt_tokens"], 70 + 4 + 70);  // history + the new turn
  EXPECT_GT(second["usage"]["kvspan"]["resident_prompt_tokens"].get<int>(), 0);
  grpc::ClientContext close_context;
  v1::CloseSessionRequest close;
  close.set_session_id(opened.session_id());
  v1::CloseSessionResponse closed;
  ASSERT_TRUE(stub_->CloseSession(&close_context, close, &closed).ok());
  auto [s3, gone] = Post("/v1/completions", turn, headers);
  EXPECT_EQ(s3, 404) << gone;
  EXPECT_EQ(gone["error"]["code"], "not_found");
}

TEST_F(ServeOpenAiTest, ErrorsHaveOpenAiShapeAndHttpCodes) {
  auto expect_error = [&](const json& body, int http, const std::string& path = "/v1/completions") {
    auto [status, reply] = Post(path, body);
    EXPECT_EQ(status, http) << body;
    EXPECT_TRUE(reply["error"]["message"].is_string()) << reply;
    EXPECT_TRUE(reply["error"]["type"].is_string()) << reply;
    EXPECT_TRUE(reply["error"].contains("param")) << reply;
    EXPECT_TRUE(reply["error"].contains("code")) << reply;
  };
  expect_error({{"prompt", "x"}, {"n", 2}}, 400);
  expect_error({{"prompt", "x"}, {"policy", "int5(nope)"}}, 400);
  expect_error({{"prompt", IdsJson({5, 999999})}}, 400);
  expect_error({{"prompt", "x"}, {"model", "gpt-4"}}, 404);
  expect_error({{"messages", "hi"}}, 400, "/v1/chat/completions");
  expect_error({{"prompt", "x"}, {"stream", true}, {"temperature", -1}}, 400);  // refused before the stream
  httplib::Result bad = http_->Post("/v1/completions", "{not json", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(ServeOpenAiTest, ClientDisconnectMidStreamCancelsTheSequence) {
  const json request = {{"prompt", IdsJson(PromptIds(1, 20))}, {"max_tokens", 900}, {"ignore_eos", true},
                        {"policy", "dense"}, {"stream", true}};
  std::unique_ptr<httplib::Client> client = NewClient();
  int chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = request.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  httplib::Result r = client->send(req);
  EXPECT_FALSE(r);  // we hung up
  client.reset();
  // The sequence goes: nothing runs, and the call ended CANCELLED.
  double running = 1, cancelled = 0;
  for (int i = 0; i < 400 && (running != 0 || cancelled != 1); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    httplib::Result metrics = http_->Get("/metrics");
    ASSERT_TRUE(metrics);
    for (absl::string_view line : absl::StrSplit(metrics->body, '\n')) {
      if (absl::ConsumePrefix(&line, "kvspan:num_requests_running ")) ASSERT_TRUE(absl::SimpleAtod(line, &running));
      if (absl::ConsumePrefix(&line, "kvspan:request_failure_total{code=\"CANCELLED\"} ")) {
        ASSERT_TRUE(absl::SimpleAtod(line, &cancelled));
      }
    }
  }
  EXPECT_EQ(running, 0);
  EXPECT_EQ(cancelled, 1);
}

TEST_F(ServeOpenAiTest, SigtermDrainsHttpStreamsAndRefusesNewCalls) {
  std::string body;
  std::atomic<bool> streaming{false};
  std::thread client([&] {
    std::unique_ptr<httplib::Client> c = NewClient();
    const json request = {{"prompt", IdsJson(PromptIds(1, 20))}, {"max_tokens", 900}, {"ignore_eos", true},
                          {"policy", "dense"}, {"stream", true}};
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = request.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      body.append(data, size);
      streaming = true;
      return true;
    };
    c->send(req);
  });
  for (int i = 0; i < 1200 && !streaming; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(streaming);
  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
  int refused = 0;
  for (int i = 0; i < 200 && refused == 0; ++i) {
    httplib::Result r = http_->Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "application/json");
    if (!r) break;
    if (r->status == 503) {
      ++refused;
      EXPECT_THAT(r->body, HasSubstr("shutting down"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  client.join();
  EXPECT_EQ(refused, 1) << "a new call while draining was not refused with 503";
  EXPECT_THAT(body, ::testing::EndsWith("data: [DONE]\n\n"));
  EXPECT_THAT(body, ::testing::Not(HasSubstr("\"error\"")));  // drained, not cut
  EXPECT_EQ(server_->Stop(0), 0);
}

TEST(ServeOpenAiStartTest, UnrecognisedChatTemplateIsAStartUpError) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.Sub("tokenizer_config.json"), R"({"chat_template": "{{ '<start_of_turn>' }}"})").ok());
  const std::string serve = absl::StrCat(kBinary, " serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data ",
                                         dir.Sub("data"), " --model ");
  auto [code, output] = RunCommand(serve + dir.path());
  EXPECT_EQ(code, 2) << output;
  EXPECT_THAT(output, HasSubstr("--chat-template")) << output;
  auto [bad_code, bad_output] = RunCommand(serve + kModel + " --chat-template gemma");
  EXPECT_EQ(bad_code, 2) << bad_output;
  EXPECT_THAT(bad_output, HasSubstr("llama3, chatml, mistral, plain")) << bad_output;
}

TEST_F(ServeOpenAiTest, OfficialOpenAiNodeClient) {
  const std::string check = kSource + "/tests/openai_js/check.mjs";
  ASSERT_EQ(access((kSource + "/tests/openai_js/node_modules/openai/package.json").c_str(), R_OK), 0)
      << "the openai npm package is not installed: run tools/setup.sh (npm ci --prefix tests/openai_js)";
  absl::StatusOr<std::unique_ptr<model::Tokenizer>> tokenizer = model::Tokenizer::LoadFromDir(kModel);
  ASSERT_TRUE(tokenizer.ok());
  const size_t chat_tokens = (*tokenizer)->EncodeForGeneration("User: The jury said\nAssistant: ").size();
  const std::string command = absl::StrCat("node ", check, " http://", server_->http_address(), " ", chat_tokens);
  auto [code, output] = RunCommand(command);
  EXPECT_EQ(code, 0) << command << "\n" << output;
  EXPECT_THAT(output, HasSubstr("all checks passed")) << output;
  EXPECT_THAT(output, HasSubstr("ok: n=2: BadRequestError 400")) << output;
  EXPECT_THAT(output, HasSubstr("ok: repeated prompt cached_tokens")) << output;
  std::printf("%s", output.c_str());
}

}  // namespace
}  // namespace kvspan::tests
