// ApiKeys: the keys `kvspan serve --api-key-file` accepts (common/api_key_file.h), and the
// one check both protocols make with them: a call must carry `authorization: Bearer <key>`
// (gRPC metadata) or `Authorization: Bearer <key>` (HTTP header) with one of the keys.
//
// Constant time: only SHA-256 digests of the keys are kept, and a presented key is hashed
// and compared with every digest by CRYPTO_memcmp, without stopping at the first match,
// so the time taken depends neither on where a wrong key first differs nor on which key
// matched (only on the presented key's length, which the caller knows anyway).
//
// Where the gRPC check runs: at the top of each kvspan.v1.Serving handler, through
// CheckGrpcCall. Not a grpc::AuthMetadataProcessor, because gRPC only runs one on secure
// (TLS) server credentials, and because it would also guard grpc.health.v1, which stays
// open for Kubernetes' probes; reflection stays open too (it describes the schema only).
//
// Thread-safe: immutable after construction.
#ifndef KVSPAN_FRONTEND_API_KEYS_H_
#define KVSPAN_FRONTEND_API_KEYS_H_

#include <array>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace kvspan::frontend {

class ApiKeys {
 public:
  // REQUIRES: `keys` non-empty (LoadApiKeyFile guarantees it).
  explicit ApiKeys(const std::vector<std::string>& keys);

  // True when `key` is one of the keys. Constant time as the file comment says.
  bool Matches(absl::string_view key) const;

  // OK when `authorization` (a header's value) is "Bearer <key>" with a known key (the
  // scheme's case is ignored, as RFC 7235 says); Unauthenticated otherwise, with a
  // message that names what was missing but never the key.
  absl::Status CheckAuthorization(absl::string_view authorization) const;

 private:
  std::vector<std::array<unsigned char, 32>> digests_;  // SHA-256 of each key
};

// The gRPC handlers' check: OK when `keys` is null (no --api-key-file) or the call's
// `authorization` metadata passes CheckAuthorization; else UNAUTHENTICATED.
grpc::Status CheckGrpcCall(const ApiKeys* keys, const grpc::ServerContext& context);

}  // namespace kvspan::frontend

#endif  // KVSPAN_FRONTEND_API_KEYS_H_
