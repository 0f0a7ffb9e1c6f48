// `kvspan serve --tls-cert --tls-key [--tls-client-ca]` as its own process, with
// certificates made here by the openssl command line: a CA, a server certificate for
// 127.0.0.1 / localhost, a client certificate from the CA and one from another CA. A TLS
// client that trusts the CA is served; a plaintext client is refused (UNAVAILABLE); with
// --tls-client-ca a client without a certificate, or with one from the other CA, is too.
// `kvspan client --tls-ca [--tls-cert --tls-key]` connects the same way. The HTTP port
// (--http-listen) takes the same files: HTTPS only, with the same mutual-TLS rule, probed
// with httplib's SSLClient and Client. Every HTTP client here has bounded connect, read
// and write timeouts: SSLClient's handshake waits up to its connection timeout, 300 s by
// default (as long as ctest's limit), so a handshake nobody answers would look like a hang.
#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <httplib.h>

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
using ::testing::HasSubstr;

const std::string kBinary = KVSPAN_COMMAND;
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

std::string Pem(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(path);
  CHECK(pem.ok()) << pem.status();
  return *pem;
}

class ServeTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // NOTE: an HTTPS client refused by mutual TLS (under TLS 1.3, after its side of the
    // handshake) writes its request to a socket the server has closed: SIGPIPE, which
    // would kill this process and orphan the servers, whose inherited stdout then keeps
    // ctest waiting for its full TIMEOUT (the "hang"). Ignored, the write fails instead.
    signal(SIGPIPE, SIG_IGN);
    dir_ = new TempDir();
    MakeTestCertificates(dir_->path());
    const std::vector<std::string> common = {"--model", kModel, "--threads", "2", "--tls-cert", Dir("server.pem"),
                                             "--tls-key", Dir("server.key"), "--http-listen", "127.0.0.1:0"};
    std::vector<std::string> args = common;
    args.insert(args.end(), {"--data", Dir("data")});
    tls_ = new ServeProcess(kBinary, args);
    args = common;
    args.insert(args.end(), {"--data", Dir("data_mtls"), "--tls-client-ca", Dir("ca.pem")});
    mtls_ = new ServeProcess(kBinary, args);
  }
  static void TearDownTestSuite() {
    delete tls_;
    delete mtls_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_FALSE(tls_->address().empty()) << "kvspan serve --tls-cert did not come up";
    ASSERT_FALSE(mtls_->address().empty()) << "kvspan serve --tls-client-ca did not come up";
    ASSERT_FALSE(tls_->http_address().empty());
    ASSERT_FALSE(mtls_->http_address().empty());
  }

  static std::string Dir(const std::string& name) { return dir_->Sub(name); }

  // ServerInfo over `credentials` to `server`.
  static grpc::Status Call(const ServeProcess& server, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    auto stub = v1::Serving::NewStub(grpc::CreateChannel(server.address(), credentials));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::ServerInfoResponse response;
    return stub->ServerInfo(&context, v1::ServerInfoRequest(), &response);
  }

  // TLS trusting ca.pem, with the client certificate `name` (none when empty).
  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& name) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Pem(Dir("ca.pem"));
    if (!name.empty()) {
      options.pem_cert_chain = Pem(Dir(name + ".pem"));
      options.pem_private_key = Pem(Dir(name + ".key"));
    }
    return grpc::SslCredentials(options);
  }

  static std::string HostOf(const std::string& address) { return address.substr(0, address.rfind(':')); }
  static int PortOf(const std::string& address) {
    int port = 0;
    CHECK(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
    return port;
  }

  // Bounded waits on every client (see the file comment).
  template <typename ClientT>  // httplib::Client or httplib::SSLClient
  static void Bound(ClientT& client) {
    client.set_connection_timeout(5, 0);
    client.set_read_timeout(30, 0);  // a /v1/completions answer on two threads
    client.set_write_timeout(5, 0);
  }

  // An HTTPS client to `server`'s HTTP port trusting `ca` (ca.pem, other_ca.pem), with the
  // client certificate `name` (none when empty).
  static std::unique_ptr<httplib::SSLClient> Https(const ServeProcess& server, const std::string& ca,
                                                   const std::string& name) {
    const std::string& address = server.http_address();
    auto client = name.empty() ? std::make_unique<httplib::SSLClient>(HostOf(address), PortOf(address))
                               : std::make_unique<httplib::SSLClient>(HostOf(address), PortOf(address),
                                                                      Dir(name + ".pem"), Dir(name + ".key"));
    client->set_ca_cert_path(Dir(ca).c_str());
    client->enable_server_certificate_verification(true);
    Bound(*client);
    return client;
  }

  static std::unique_ptr<httplib::Client> PlainHttp(const ServeProcess& server) {
    auto client = std::make_unique<httplib::Client>(HostOf(server.http_address()), PortOf(server.http_address()));
    Bound(*client);
    return client;
  }

  static TempDir* dir_;
  static ServeProcess* tls_;
  static ServeProcess* mtls_;
};
TempDir* ServeTlsTest::dir_ = nullptr;
ServeProcess* ServeTlsTest::tls_ = nullptr;
ServeProcess* ServeTlsTest::mtls_ = nullptr;

TEST_F(ServeTlsTest, TlsClientIsServedAndPlaintextIsRefused) {
  const grpc::Status tls = Call(*tls_, Tls(""));
  EXPECT_TRUE(tls.ok()) << tls.error_message();
  EXPECT_EQ(Call(*tls_, grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA does not accept the server.
  grpc::SslCredentialsOptions other;
  other.pem_root_certs = Pem(Dir("other_ca.pem"));
  EXPECT_EQ(Call(*tls_, grpc::SslCredentials(other)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ServeTlsTest, MutualTlsRefusesAClientWithoutACertificateOrFromAnotherCa) {
  const grpc::Status ok = Call(*mtls_, Tls("client"));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(Call(*mtls_, Tls("")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call(*mtls_, Tls("stranger")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call(*mtls_, grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ServeTlsTest, KvspanClientConnectsWithTheCaAndItsCertificate) {
  const std::string info = absl::StrCat(kBinary, " client --info --tls-ca ", Dir("ca.pem"), " --target ");
  const ShellOutput tls = RunShell(info + tls_->address());
  EXPECT_EQ(tls.exit_code, 0) << tls.text;
  EXPECT_THAT(tls.text, HasSubstr("model_name"));
  const ShellOutput plain = RunShell(absl::StrCat(kBinary, " client --info --target ", tls_->address()));
  EXPECT_EQ(plain.exit_code, 1) << plain.text;
  EXPECT_THAT(plain.text, HasSubstr("UNAVAILABLE"));

  const ShellOutput mtls = RunShell(absl::StrCat(info, mtls_->address(), " --tls-cert ", Dir("client.pem"),
                                                      " --tls-key ", Dir("client.key")));
  EXPECT_EQ(mtls.exit_code, 0) << mtls.text;
  const ShellOutput nocert = RunShell(info + mtls_->address());
  EXPECT_EQ(nocert.exit_code, 1) << nocert.text;
  EXPECT_THAT(nocert.text, HasSubstr("UNAVAILABLE"));
}

TEST_F(ServeTlsTest, HttpsClientTrustingTheCaIsServedAndOthersAreRefused) {
  std::unique_ptr<httplib::SSLClient> https = Https(*tls_, "ca.pem", "");
  httplib::Result health = https->Get("/health");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok");
  httplib::Result completion = https->Post(
      "/v1/completions", R"({"prompt": "The jury said that", "max_tokens": 4, "temperature": 0})", "application/json");
  ASSERT_TRUE(completion) << httplib::to_string(completion.error());
  EXPECT_EQ(completion->status, 200) << completion->body;
  EXPECT_THAT(completion->body, HasSubstr("\"choices\""));
  EXPECT_THAT(completion->body, HasSubstr("\"completion_tokens\":4"));

  // Plain HTTP to the HTTPS port: the handshake fails on the request line, no response.
  httplib::Result plain = PlainHttp(*tls_)->Get("/health");
  EXPECT_FALSE(plain);
  // A client trusting another CA rejects the server's certificate.
  httplib::Result untrusted = Https(*tls_, "other_ca.pem", "")->Get("/health");
  ASSERT_FALSE(untrusted);
  EXPECT_EQ(untrusted.error(), httplib::Error::SSLServerVerification);
  // The server still serves after the failed handshakes.
  httplib::Result again = https->Get("/health");
  ASSERT_TRUE(again) << httplib::to_string(again.error());
  EXPECT_EQ(again->status, 200);
}

TEST_F(ServeTlsTest, HttpMutualTlsRefusesAClientWithoutACertificateOrFromAnotherCa) {
  httplib::Result ok = Https(*mtls_, "ca.pem", "client")->Get("/health");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);
  httplib::Result completion = Https(*mtls_, "ca.pem", "client")
                                   ->Post("/v1/completions", R"({"prompt": "The jury", "max_tokens": 2})",
                                          "application/json");
  ASSERT_TRUE(completion) << httplib::to_string(completion.error());
  EXPECT_EQ(completion->status, 200) << completion->body;
  // Under TLS 1.3 the client's side of the handshake ends before the server checks its
  // certificate: the refusal shows when the response is read (a read error, no response).
  EXPECT_FALSE(Https(*mtls_, "ca.pem", "")->Get("/health"));
  EXPECT_FALSE(Https(*mtls_, "ca.pem", "stranger")->Get("/health"));
  EXPECT_FALSE(PlainHttp(*mtls_)->Get("/health"));
}

// A client that connects and sends nothing holds a handler thread in SSL_accept until the
// server's read timeout (5 s), not forever: with more silent connections than HTTP threads
// a real client is still served, and SIGTERM still stops the server (exit 0) while they
// stay open. A watchdog SIGKILLs the server after 60 s so a hang fails instead of blocking.
TEST_F(ServeTlsTest, SilentConnectionsNeitherStarveNorHangTheHttpsPort) {
  ServeProcess server(kBinary, {"--model", kModel, "--threads", "2", "--data", Dir("data_silent"), "--tls-cert",
                                Dir("server.pem"), "--tls-key", Dir("server.key"), "--http-listen", "127.0.0.1:0",
                                "--http-threads", "2", "--grace-ms", "1000"});
  ASSERT_FALSE(server.http_address().empty());
  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_port = htons(PortOf(server.http_address()));
  ASSERT_EQ(inet_pton(AF_INET, HostOf(server.http_address()).c_str(), &peer.sin_addr), 1);
  std::vector<int> silent;
  for (int i = 0; i < 4; ++i) {  // twice the HTTP threads
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&peer), sizeof(peer)), 0);
    silent.push_back(fd);
  }
  std::unique_ptr<httplib::SSLClient> https = Https(server, "ca.pem", "");
  https->set_connection_timeout(30, 0);  // queued behind the silent ones, ~10 s
  httplib::Result health = https->Get("/health");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  https->stop();

  for (int i = 0; i < 4; ++i) {  // silent again while it stops
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&peer), sizeof(peer)), 0);
    silent.push_back(fd);
  }
  std::atomic<bool> stopped{false};
  const pid_t pid = server.pid();
  std::thread watchdog([&stopped, pid] {
    for (int i = 0; i < 600 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!stopped) kill(pid, SIGKILL);
  });
  const int exit_code = server.Stop(SIGTERM);
  stopped = true;
  watchdog.join();
  EXPECT_EQ(exit_code, 0) << "-9: still running 60 s after SIGTERM";
  for (const int fd : silent) close(fd);
}

}  // namespace
}  // namespace kvspan::tests
