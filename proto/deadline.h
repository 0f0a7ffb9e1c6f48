// A gRPC call's deadline on the steady clock, the clock the workers schedule by, and back.
// Thread-safe (pure functions).
#ifndef KVSPAN_PROTO_DEADLINE_H_
#define KVSPAN_PROTO_DEADLINE_H_

#include <chrono>

#include <grpcpp/server_context.h>

namespace kvspan::proto {

// The deadline of the call `context` serves; time_point::max() when it has none.
std::chrono::steady_clock::time_point SteadyDeadline(const grpc::ServerContextBase& context);

// `deadline` as a client deadline; system_clock max() for steady_clock max().
std::chrono::system_clock::time_point SystemDeadline(std::chrono::steady_clock::time_point deadline);

}  // namespace kvspan::proto

#endif  // KVSPAN_PROTO_DEADLINE_H_
