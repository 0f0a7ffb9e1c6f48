#include "cachestore/server.h"

#include <chrono>
#include <utility>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"

namespace kvspan::cachestore {

absl::StatusOr<std::unique_ptr<CacheServer>> CacheServer::Start(std::shared_ptr<CacheStore> store,
                                                                const ServerOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("CacheServer: no store");
  if (options.max_receive_message_bytes <= 0 || options.service.get_chunk_bytes <= 0 ||
      options.service.get_chunk_bytes > options.max_receive_message_bytes) {
    return absl::InvalidArgumentError(
        "CacheServer: message and chunk sizes must be positive, chunk <= message");
  }
  const size_t colon = options.listen_address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", options.listen_address, "' has no :port"));
  }
  std::unique_ptr<CacheServer> server(new CacheServer());
  server->service_ = std::make_unique<CacheStoreService>(std::move(store), options.service);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address,
                           options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_receive_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_receive_message_bytes));
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(kvspan::v1::CacheStore::service_full_name(), true);
  }
  std::string host = options.listen_address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  server->address_ = absl::StrCat(host, ":", server->port_);
  return server;
}

CacheServer::~CacheServer() { Shutdown(); }

void CacheServer::Shutdown(int64_t grace_ms) {
  if (server_ == nullptr) return;
  std::call_once(shutdown_once_, [&] {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    if (health != nullptr) health->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  });
}

void CacheServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace kvspan::cachestore
