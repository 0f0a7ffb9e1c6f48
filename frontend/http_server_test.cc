#include "frontend/http_server.h"

#include "absl/strings/numbers.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::frontend {
namespace {

using kvspan::testing::StatusIs;

int PortOf(const std::string& address) {
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
  return port;
}

TEST(HttpServerTest, ServesRegisteredRoutesOnAPickedPortUntilStopped) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<HttpServer> http, HttpServer::Create({.listen_address = "127.0.0.1:0"}));
  http->Get("/hello", [](const httplib::Request&, httplib::Response& r) { r.set_content("hi", "text/plain"); });
  http->Post("/echo", [](const httplib::Request& q, httplib::Response& r) { r.set_content(q.body, "text/plain"); });
  http->Start();
  const int port = PortOf(http->address());
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  httplib::Result get = client.Get("/hello");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "hi");
  httplib::Result post = client.Post("/echo", "body", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->body, "body");
  httplib::Result missing = client.Get("/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  http->Stop();
  http->Stop();  // idempotent
  client.stop();
  EXPECT_FALSE(httplib::Client("127.0.0.1", port).Get("/hello"));
}

TEST(HttpServerTest, BadAddressesAreRejected) {
  EXPECT_THAT(HttpServer::Create({.listen_address = "127.0.0.1"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HttpServer::Create({.listen_address = "127.0.0.1:http"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HttpServer::Create({.listen_address = "127.0.0.1:0", .num_threads = 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<HttpServer> taken, HttpServer::Create({.listen_address = "127.0.0.1:0"}));
  taken->Start();  // a port in use is refused, not shared (no SO_REUSEPORT)
  EXPECT_THAT(HttpServer::Create({.listen_address = taken->address()}).status(),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(HttpServerTest, InconsistentOrUnloadableTlsFilesAreRejected) {
  EXPECT_THAT(HttpServer::Create({.tls = {.cert_file = "server.pem"}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HttpServer::Create({.tls = {.key_file = "server.key"}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HttpServer::Create({.tls = {.client_ca_file = "ca.pem"}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A file OpenSSL cannot load (here: none there) stops Create, with the file named.
  EXPECT_THAT(HttpServer::Create({.tls = {.cert_file = "/nonexistent/server.pem", .key_file = "/nonexistent/k"}})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("/nonexistent/server.pem")));
}

}  // namespace
}  // namespace kvspan::frontend
