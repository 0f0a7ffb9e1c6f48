// CacheServer: a running gRPC server for one CacheStore — the CacheStore service,
// grpc.health.v1 (service "kvspan.v1.CacheStore" and "" report SERVING) and server
// reflection. What `kvspan cachestore` runs. Thread-safe.
#ifndef KVSPAN_CACHESTORE_SERVER_H_
#define KVSPAN_CACHESTORE_SERVER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/server.h>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "cachestore/service.h"
#include "cachestore/store.h"
#include "cachestore/types.h"

namespace kvspan::cachestore {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see CacheServer::port()).
  std::string listen_address = "127.0.0.1:0";
  // Largest message the server accepts (bounds a Put chunk); larger ones are refused by
  // gRPC with ResourceExhausted.
  int64_t max_receive_message_bytes = kDefaultMaxMessageBytes;
  ServiceOptions service;
  // The port's credentials (TLS, mutual TLS); null = plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

class CacheServer {
 public:
  // Starts serving `store` (shared). Unavailable if the address cannot be bound,
  // InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<CacheServer>> Start(std::shared_ptr<CacheStore> store,
                                                            const ServerOptions& options);
  // Shuts down (waiting for in-flight calls) if not done yet.
  ~CacheServer();

  // The port actually bound.
  int port() const { return port_; }
  // "127.0.0.1:<port>" style address clients can dial (host from listen_address).
  std::string address() const { return address_; }
  // Stops accepting calls, waits up to `grace_ms` for in-flight ones, cancels the rest.
  void Shutdown(int64_t grace_ms = 5000);
  // Blocks until Shutdown() has completed.
  void Wait();

 private:
  CacheServer() = default;
  std::unique_ptr<CacheStoreService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  std::once_flag shutdown_once_;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_SERVER_H_
