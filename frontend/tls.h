// TLS for the node's gRPC port (`kvspan serve --tls-cert --tls-key [--tls-client-ca]`):
// the PEM files read once at start-up and turned into grpc::SslServerCredentials.
// Pure functions: thread-safe.
#ifndef KVSPAN_FRONTEND_TLS_H_
#define KVSPAN_FRONTEND_TLS_H_

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace kvspan::frontend {

// PEM file paths; all empty = plaintext.
struct ServerTlsFiles {
  std::string cert_file;       // the server's certificate chain
  std::string key_file;        // its private key
  // CA bundle that client certificates must chain to; set = mutual TLS (a client without a
  // certificate, or with one from another CA, fails its handshake). Empty = none asked.
  std::string client_ca_file;
};

// InsecureServerCredentials when every path is empty; else SslServerCredentials over the
// files' contents. InvalidArgument when only one of cert_file / key_file is set, or
// client_ca_file without them; ReadFile's error (NotFound, ...) for a file it cannot read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsFiles& files);

// The client side between the roles (`--peer-tls-ca`, `--peer-tls-cert`, `--peer-tls-key`
// on `kvspan frontend` and `kvspan decode`): PEM file paths; all empty = plaintext.
struct PeerTlsFiles {
  std::string ca_file;    // CA bundle the workers' certificates must chain to
  std::string cert_file;  // this role's client certificate, for workers with --tls-client-ca
  std::string key_file;
};

// InsecureChannelCredentials when every path is empty; else SslCredentials over the files'
// contents. InvalidArgument for cert_file / key_file without each other or without ca_file;
// ReadFile's error for a file it cannot read.
// `flag` ("--peer-tls", "--store-tls") names the flags in the messages.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakePeerCredentials(const PeerTlsFiles& files,
                                                                              const std::string& flag = "--peer-tls");

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_TLS_H_
