// `kvspan serve --tls-cert --tls-key [--tls-client-ca]` as its own process, with
// certificates made here by the openssl command line: a CA, a server certificate for
// 127.0.0.1 / localhost, a client certificate from the CA and one from another CA. A TLS
// client that trusts the CA is served; a plaintext client is refused (UNAVAILABLE); with
// --tls-client-ca a client without a certificate, or with one from the other CA, is too.
// `kvspan client --tls-ca [--tls-cert --tls-key]` connects the same way.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

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

// Makes, in `dir`: ca.pem, other_ca.pem, server.{pem,key} (from ca, SAN 127.0.0.1 and
// localhost), client.{pem,key} (from ca), stranger.{pem,key} (from other_ca).
void MakeCertificates(const std::string& dir) {
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  CHECK(WriteFile(dir + "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n").ok());
  CHECK(WriteFile(dir + "/client.ext", "extendedKeyUsage=clientAuth\n").ok());
  std::vector<std::string> commands;
  for (const char* ca : {"ca", "other_ca"}) {
    commands.push_back(absl::StrCat("openssl req -x509 ", ec, " -days 2 -subj /CN=kvspan-test-", ca, " -keyout ",
                                    dir, "/", ca, ".key -out ", dir, "/", ca, ".pem"));
  }
  auto leaf = [&](const char* name, const char* ca, const char* ext) {
    commands.push_back(absl::StrCat("openssl req ", ec, " -subj /CN=", name, " -keyout ", dir, "/", name,
                                    ".key -out ", dir, "/", name, ".csr"));
    commands.push_back(absl::StrCat("openssl x509 -req -days 2 -in ", dir, "/", name, ".csr -CA ", dir, "/", ca,
                                    ".pem -CAkey ", dir, "/", ca, ".key -CAcreateserial -extfile ", dir, "/", ext,
                                    " -out ", dir, "/", name, ".pem"));
  };
  leaf("server", "ca", "server.ext");
  leaf("client", "ca", "client.ext");
  leaf("stranger", "other_ca", "client.ext");
  for (const std::string& command : commands) {
    const ShellOutput made = RunShell(command);
    CHECK_EQ(made.exit_code, 0) << command << "\n" << made.text;
  }
}

std::string Pem(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(path);
  CHECK(pem.ok()) << pem.status();
  return *pem;
}

class ServeTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    MakeCertificates(dir_->path());
    const std::vector<std::string> common = {"--model", kModel, "--threads", "2", "--tls-cert", Dir("server.pem"),
                                             "--tls-key", Dir("server.key")};
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

}  // namespace
}  // namespace kvspan::tests
