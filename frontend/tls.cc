#include "frontend/tls.h"

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace kvspan::frontend {
namespace {

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(path);
  if (!pem.ok()) return absl::Status(pem.status().code(), absl::StrCat(flag, ": ", pem.status().message()));
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsFiles& files) {
  if (files.cert_file.empty() && files.key_file.empty()) {
    if (!files.client_ca_file.empty()) return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("--tls-cert", files.cert_file));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem("--tls-key", files.key_file));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!files.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("--tls-client-ca", files.client_ca_file));
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakePeerCredentials(const PeerTlsFiles& files,
                                                                              const std::string& flag) {
  const std::string ca = flag + "-ca", cert = flag + "-cert", key = flag + "-key";
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cert, " and ", key, " go together"));
  }
  if (files.ca_file.empty()) {
    if (!files.cert_file.empty()) return absl::InvalidArgumentError(absl::StrCat(cert, " needs ", ca));
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(ca.c_str(), files.ca_file));
  if (!files.cert_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem(cert.c_str(), files.cert_file));
    ASSIGN_OR_RETURN(options.pem_private_key, ReadPem(key.c_str(), files.key_file));
  }
  return grpc::SslCredentials(options);
}

}  // namespace kvspan::frontend
