// `kvspan serve --api-key-file` as its own process: every kvspan.v1.Serving call and every
// HTTP /v1/... call needs `authorization: Bearer <key>` with a key from the file; without
// one or with a wrong one the call is UNAUTHENTICATED (gRPC) or 401 with OpenAI's error
// object (HTTP). /health stays open. `kvspan client` sends the key from --api-key-file or
// $KVSPAN_API_KEY. A key file that is empty or missing stops `kvspan serve` with exit 2.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

using kvspan::testing::TempDir;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kBinary = KVSPAN_COMMAND;
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";
constexpr char kKey[] = "sk-kvspan-test-0123456789";

// One server for the suite: starting one loads the model.
class ServeAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    CHECK(WriteFile(dir_->Sub("keys"), absl::StrCat("# test keys\n\nsk-other-key\n", kKey, "\n")).ok());
    server_ = new ServeProcess(kBinary, {"--model", kModel, "--data", dir_->Sub("data"), "--threads", "2",
                                         "--http-listen", "127.0.0.1:0", "--api-key-file", dir_->Sub("keys")});
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_FALSE(server_->address().empty()) << "kvspan serve did not come up";
    ASSERT_FALSE(server_->http_address().empty());
  }

  // ServerInfo with `authorization` metadata (none when empty).
  static grpc::Status CallServerInfo(const std::string& authorization) {
    grpc::ClientContext context;
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::ServerInfoResponse response;
    return server_->NewStub()->ServerInfo(&context, v1::ServerInfoRequest(), &response);
  }

  static std::unique_ptr<httplib::Client> NewHttpClient() {
    const std::string& address = server_->http_address();
    const size_t colon = address.rfind(':');
    int port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(address.substr(colon + 1), &port));
    auto client = std::make_unique<httplib::Client>(address.substr(0, colon), port);
    client->set_read_timeout(std::chrono::seconds(120));
    return client;
  }

  static TempDir* dir_;
  static ServeProcess* server_;
};
TempDir* ServeAuthTest::dir_ = nullptr;
ServeProcess* ServeAuthTest::server_ = nullptr;

TEST_F(ServeAuthTest, GrpcNeedsAKnownBearerKey) {
  EXPECT_EQ(CallServerInfo("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallServerInfo("Bearer sk-wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallServerInfo(kKey).error_code(), grpc::StatusCode::UNAUTHENTICATED);  // no scheme
  EXPECT_TRUE(CallServerInfo(absl::StrCat("Bearer ", kKey)).ok());
  EXPECT_TRUE(CallServerInfo("Bearer sk-other-key").ok());  // every key of the file

  // A streaming call, without and with the key.
  std::unique_ptr<v1::Serving::Stub> stub = server_->NewStub();
  const v1::GenerateRequest request = GreedyRequest(PromptIds(3, 8), 2, "", "");
  EXPECT_EQ(RunGenerate(*stub, request).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext context;
  context.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  int messages = 0;
  while (reader->Read(&response)) ++messages;
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(messages, 2);  // Started ... Finished
}

TEST_F(ServeAuthTest, HttpV1NeedsAKnownBearerKeyAndHealthDoesNot) {
  std::unique_ptr<httplib::Client> http = NewHttpClient();
  const httplib::Headers none;
  const httplib::Headers wrong = {{"Authorization", "Bearer sk-wrong"}};
  const httplib::Headers right = {{"Authorization", absl::StrCat("Bearer ", kKey)}};
  for (const httplib::Headers* headers : {&none, &wrong}) {
    httplib::Result models = http->Get("/v1/models", *headers);
    ASSERT_TRUE(models);
    EXPECT_EQ(models->status, 401);
    const json error = json::parse(models->body, nullptr, false);
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << models->body;
    EXPECT_EQ(error["error"]["code"], "invalid_api_key") << models->body;
    EXPECT_THAT(std::string(error["error"]["message"]), Not(HasSubstr(kKey)));
  }
  httplib::Result models = http->Get("/v1/models", right);
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200) << models->body;

  const std::string body = json({{"prompt", "the"}, {"max_tokens", 2}, {"temperature", 0}}).dump();
  for (const httplib::Headers* headers : {&none, &wrong}) {
    httplib::Result completion = http->Post("/v1/completions", *headers, body, "application/json");
    ASSERT_TRUE(completion);
    EXPECT_EQ(completion->status, 401) << completion->body;
  }
  httplib::Result completion = http->Post("/v1/completions", right, body, "application/json");
  ASSERT_TRUE(completion);
  EXPECT_EQ(completion->status, 200) << completion->body;

  httplib::Result health = http->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  httplib::Result metrics = http->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
}

TEST_F(ServeAuthTest, ClientSendsTheKeyFromAFileOrTheEnvironment) {
  const std::string info = absl::StrCat(kBinary, " client --target ", server_->address(), " --info");
  ShellOutput without = RunShell(absl::StrCat("env -u KVSPAN_API_KEY ", info));
  EXPECT_EQ(without.exit_code, 1) << without.text;
  EXPECT_THAT(without.text, HasSubstr("UNAUTHENTICATED"));

  ASSERT_TRUE(WriteFile(dir_->Sub("client_key"), absl::StrCat("# mine\n", kKey, "\n")).ok());
  ShellOutput with_file = RunShell(absl::StrCat(info, " --api-key-file ", dir_->Sub("client_key")));
  EXPECT_EQ(with_file.exit_code, 0) << with_file.text;
  EXPECT_THAT(with_file.text, HasSubstr("model_name"));

  ShellOutput with_env = RunShell(absl::StrCat("env KVSPAN_API_KEY=", kKey, " ", info));
  EXPECT_EQ(with_env.exit_code, 0) << with_env.text;
  ShellOutput wrong_env = RunShell(absl::StrCat("env KVSPAN_API_KEY=sk-wrong ", info));
  EXPECT_EQ(wrong_env.exit_code, 1) << wrong_env.text;
  EXPECT_THAT(wrong_env.text, HasSubstr("UNAUTHENTICATED"));

  // A generation, not just ServerInfo.
  ShellOutput generate = RunShell(absl::StrCat(kBinary, " client --target ", server_->address(),
                                          " --prompt the --max-tokens 2 --temperature 0 --api-key-file ",
                                          dir_->Sub("client_key")));
  EXPECT_EQ(generate.exit_code, 0) << generate.text;
}

TEST(ServeAuthStartTest, AnEmptyOrMissingKeyFileIsAStartUpError) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.Sub("empty"), "# no keys\n\n").ok());
  for (const std::string& file : {dir.Sub("empty"), dir.Sub("missing")}) {
    ShellOutput serve = RunShell(absl::StrCat(kBinary, " serve --model ", kModel, " --listen 127.0.0.1:0 --data ",
                                         dir.Sub("data"), " --api-key-file ", file));
    EXPECT_EQ(serve.exit_code, 2) << serve.text;
    EXPECT_THAT(serve.text, HasSubstr("--api-key-file"));
  }
}

}  // namespace
}  // namespace kvspan::tests
