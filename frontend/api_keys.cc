#include "frontend/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "proto/status_conversion.h"

namespace kvspan::frontend {
namespace {

std::array<unsigned char, 32> Sha256(absl::string_view text) {
  std::array<unsigned char, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

}  // namespace

ApiKeys::ApiKeys(const std::vector<std::string>& keys) {
  digests_.reserve(keys.size());
  for (const std::string& key : keys) digests_.push_back(Sha256(key));
}

bool ApiKeys::Matches(absl::string_view key) const {
  const std::array<unsigned char, 32> presented = Sha256(key);
  int matched = 0;
  // No early exit: every digest is compared whatever the earlier ones gave.
  for (const std::array<unsigned char, 32>& digest : digests_) {
    matched |= CRYPTO_memcmp(digest.data(), presented.data(), digest.size()) == 0 ? 1 : 0;
  }
  return matched != 0;
}

absl::Status ApiKeys::CheckAuthorization(absl::string_view authorization) const {
  if (authorization.empty()) return absl::UnauthenticatedError("no API key: send 'Authorization: Bearer <key>'");
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("the authorization is not 'Bearer <key>'");
  }
  if (!Matches(absl::StripAsciiWhitespace(authorization.substr(kScheme.size())))) {
    return absl::UnauthenticatedError("invalid API key");
  }
  return absl::OkStatus();
}

grpc::Status CheckGrpcCall(const ApiKeys* keys, const grpc::ServerContext& context) {
  if (keys == nullptr) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  const absl::string_view value = it == metadata.end() ? absl::string_view()
                                                      : absl::string_view(it->second.data(), it->second.size());
  return proto::ToGrpcStatus(keys->CheckAuthorization(value));
}

}  // namespace kvspan::frontend
