// CacheStoreService: the kvspan.v1.CacheStore gRPC service over a CacheStore
// (proto/kvspan/v1/cachestore.proto). Built on the synchronous gRPC API: each handler
// runs on a gRPC thread, holds no lock across a stream read or write (the store's own
// locks are never held across calls into gRPC), and checks for cancellation or an
// expired deadline between chunks.
// Bad input gets InvalidArgument (malformed key or namespace, broken chunk sequence) or
// ResourceExhausted (value over max_value_bytes), each with a message naming the field;
// the server keeps serving. Thread-safe.
#ifndef KVSPAN_CACHESTORE_SERVICE_H_
#define KVSPAN_CACHESTORE_SERVICE_H_

#include <cstdint>
#include <memory>

#include "cachestore/store.h"
#include "kvspan/v1/cachestore.grpc.pb.h"

namespace kvspan::cachestore {

struct ServiceOptions {
  // Payload bytes per Get response chunk.
  int64_t get_chunk_bytes = int64_t{1} << 20;
};

class CacheStoreService final : public kvspan::v1::CacheStore::Service {
 public:
  // Shares ownership of `store` (REQUIRES: non-null).
  CacheStoreService(std::shared_ptr<CacheStore> store, const ServiceOptions& options);

  grpc::Status Lookup(grpc::ServerContext* context, const kvspan::v1::LookupRequest* request,
                      kvspan::v1::LookupResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const kvspan::v1::GetRequest* request,
                   grpc::ServerWriter<kvspan::v1::GetResponse>* writer) override;
  grpc::Status Put(grpc::ServerContext* context,
                   grpc::ServerReader<kvspan::v1::PutRequest>* reader,
                   kvspan::v1::PutResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const kvspan::v1::DeleteRequest* request,
                      kvspan::v1::DeleteResponse* response) override;
  grpc::Status Pin(grpc::ServerContext* context, const kvspan::v1::PinRequest* request,
                   kvspan::v1::PinResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const kvspan::v1::StatsRequest* request,
                     kvspan::v1::StatsResponse* response) override;

 private:
  std::shared_ptr<CacheStore> store_;
  const ServiceOptions options_;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_SERVICE_H_
