// ServingClient against a scripted in-process kvspan.v1.Serving on 127.0.0.1: stream
// order, callbacks, cancellation, protocol and status errors, and the usage line.
// The real server is tested end to end in tests/serving_client_test.cc.
#include "node/serving_client.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::node {
namespace {

namespace v1 = ::kvspan::v1;
using ::kvspan::testing::StatusIs;

// Answers by the prompt text: "fail" -> INVALID_ARGUMENT; "no-finish" -> Started only;
// "tokens-first" -> Tokens before Started; anything else -> Started, two Tokens, Finished.
class ScriptedServing final : public v1::Serving::Service {
 public:
  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    if (request->text() == "fail") return {grpc::StatusCode::INVALID_ARGUMENT, "bad prompt"};
    v1::GenerateResponse r;
    if (request->text() == "tokens-first") {
      r.mutable_tokens()->add_ids(5);
      writer->Write(r);
      return grpc::Status::OK;
    }
    v1::Started* started = r.mutable_started();
    started->set_request_id("r1");
    started->set_prompt_tokens(10);
    started->set_store_prompt_tokens(4);
    started->set_resident_prompt_tokens(2);
    started->set_computed_prompt_tokens(4);
    writer->Write(r);
    if (request->text() == "no-finish") return grpc::Status::OK;
    for (int id : {7, 8}) {
      r.Clear();
      r.mutable_tokens()->add_ids(id);
      r.mutable_tokens()->set_text(id == 7 ? "he" : "llo");
      writer->Write(r);
    }
    r.Clear();
    v1::Finished* f = r.mutable_finished();
    f->set_finish_reason(v1::FINISH_REASON_MAX_TOKENS);
    f->mutable_usage()->set_completion_tokens(2);
    f->set_kv_bytes_per_token(96);
    f->mutable_timings()->set_ttft_ms(12.5);
    f->mutable_timings()->set_decode_ms(4);
    writer->Write(r);
    return grpc::Status::OK;
  }
  grpc::Status ServerInfo(grpc::ServerContext*, const v1::ServerInfoRequest*,
                          v1::ServerInfoResponse* response) override {
    response->set_model_name("scripted");
    response->set_running_sequences(3);
    return grpc::Status::OK;
  }
};

class ServingClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ServingClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(port);
    ASSERT_OK_AND_ASSIGN(client_, ServingClient::Create(options));
  }
  void TearDown() override { server_->Shutdown(); }

  v1::GenerateRequest Prompt(const std::string& text) {
    v1::GenerateRequest request;
    request.set_text(text);
    return request;
  }

  ScriptedServing service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ServingClient> client_;
};

TEST_F(ServingClientTest, GenerateReturnsStartedAndFinishedAndCallsBackInOrder) {
  std::vector<std::string> seen;
  GenerateCallbacks callbacks;
  callbacks.on_started = [&](const v1::Started& s) {
    seen.push_back("started " + s.request_id());
    return true;
  };
  callbacks.on_tokens = [&](const v1::Tokens& t) {
    seen.push_back(t.text());
    return true;
  };
  ASSERT_OK_AND_ASSIGN(GenerateResult result, client_->Generate(Prompt("hi"), 5000, callbacks));
  EXPECT_THAT(seen, ::testing::ElementsAre("started r1", "he", "llo"));
  EXPECT_EQ(result.started.prompt_tokens(), 10);
  EXPECT_EQ(result.finished.usage().completion_tokens(), 2);
  EXPECT_GT(result.first_token_ms, 0);
  EXPECT_LE(result.first_token_ms, result.finished_ms);
  EXPECT_EQ(FormatUsage(result),
            "usage: prompt_tokens=10 cached=6 (store=4 resident=2) computed=4 completion_tokens=2 "
            "finish=max_tokens ttft_ms=12.5 decode_tok_s=250.0 kv_bytes_per_token=96.0");
}

TEST_F(ServingClientTest, CallbackReturningFalseCancels) {
  GenerateCallbacks callbacks;
  callbacks.on_tokens = [](const v1::Tokens&) { return false; };
  EXPECT_THAT(client_->Generate(Prompt("hi"), 5000, callbacks),
              StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(ServingClientTest, ServerStatusAndBrokenStreamsAreErrors) {
  EXPECT_THAT(client_->Generate(Prompt("fail"), 5000),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("bad prompt")));
  EXPECT_THAT(client_->Generate(Prompt("no-finish"), 5000),
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("without Finished")));
  EXPECT_THAT(client_->Generate(Prompt("tokens-first"), 5000),
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("before Started")));
}

TEST_F(ServingClientTest, ServerInfoAndUnimplementedCalls) {
  ASSERT_OK_AND_ASSIGN(v1::ServerInfoResponse info, client_->ServerInfo());
  EXPECT_THAT(FormatServerInfo(info), ::testing::HasSubstr("model_name: scripted\n"));
  EXPECT_THAT(FormatServerInfo(info), ::testing::HasSubstr("running_sequences: 3\n"));
  EXPECT_THAT(client_->CloseSession("s"), StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(ServingClientStandaloneTest, DeadPortIsUnavailableAndEmptyTargetInvalid) {
  ServingClientOptions options;
  EXPECT_THAT(ServingClient::Create(options), StatusIs(absl::StatusCode::kInvalidArgument));
  options.target = "127.0.0.1:1";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServingClient> client, ServingClient::Create(options));
  v1::GenerateRequest request;
  request.set_text("hi");
  EXPECT_THAT(client->Generate(request, 5000), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(GenerationFlagsTest, FlagsBecomeTheRequest) {
  GenerationFlags generation;
  FlagSet flags("test", "");
  generation.AddTo(&flags);
  const char* argv[] = {"test", "--temperature", "0", "--max-tokens", "7", "--stop", "a",
                        "--stop", "b", "--ignore-eos", "--policy", "int4(g=32)", "--seed", "9"};
  ASSERT_OK(flags.Parse(sizeof(argv) / sizeof(argv[0]), argv));
  const v1::GenerateRequest request = generation.ToRequest();
  EXPECT_EQ(request.sampling().temperature(), 0);
  EXPECT_TRUE(request.sampling().has_temperature());
  EXPECT_EQ(request.sampling().seed(), 9u);
  EXPECT_EQ(request.max_tokens(), 7);
  EXPECT_THAT(request.stop(), ::testing::ElementsAre("a", "b"));
  EXPECT_TRUE(request.ignore_eos());
  EXPECT_EQ(request.policy(), "int4(g=32)");
}

}  // namespace
}  // namespace kvspan::node
