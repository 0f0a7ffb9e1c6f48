// The one conversion between absl::Status and grpc::Status. Status codes are numerically
// equal in both (abseil and gRPC share the canonical code space), so the code carries
// over unchanged and the message is kept; details/payloads are dropped.
// Thread-safe (pure functions).
#ifndef KVSPAN_PROTO_STATUS_CONVERSION_H_
#define KVSPAN_PROTO_STATUS_CONVERSION_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace kvspan::proto {

// Returns a grpc::Status with the same code and message as `status`.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Returns an absl::Status with the same code and message as `status`.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace kvspan::proto

#endif  // KVSPAN_PROTO_STATUS_CONVERSION_H_
