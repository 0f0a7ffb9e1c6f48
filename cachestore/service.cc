#include "cachestore/service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cachestore/key_scheme.h"
#include "common/logging.h"
#include "proto/status_conversion.h"

namespace kvspan::cachestore {
namespace {

using ::kvspan::proto::ToGrpcStatus;

grpc::Status Invalid(const std::string& message) { return ToGrpcStatus(absl::InvalidArgumentError(message)); }

// The status to return when the client went away or its deadline passed.
grpc::Status Cancelled(grpc::ServerContext* context) {
  if (context->deadline() <= std::chrono::system_clock::now()) {
    return ToGrpcStatus(absl::DeadlineExceededError("deadline exceeded"));
  }
  return ToGrpcStatus(absl::CancelledError("cancelled by the client"));
}

}  // namespace

CacheStoreService::CacheStoreService(std::shared_ptr<CacheStore> store,
                                     const ServiceOptions& options)
    : store_(std::move(store)), options_(options) {
  CHECK(store_ != nullptr);
  CHECK_GT(options_.get_chunk_bytes, 0);
}

grpc::Status CacheStoreService::Lookup(grpc::ServerContext* context,
                                       const kvspan::v1::LookupRequest* request,
                                       kvspan::v1::LookupResponse* response) {
  absl::StatusOr<SpanKey> ns = SpanKey::FromBytes(request->namespace_key(), "namespace_key");
  if (!ns.ok()) return ToGrpcStatus(ns.status());
  // Before parsing the keys, so an oversized request costs nothing.
  if (absl::Status s = ValidateLookupRequest(*ns, request->span_keys_size()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  std::vector<SpanKey> chain;
  chain.reserve(request->span_keys_size());
  for (int i = 0; i < request->span_keys_size(); ++i) {
    absl::StatusOr<SpanKey> key =
        SpanKey::FromBytes(request->span_keys(i), absl::StrCat("span_keys[", i, "]"));
    if (!key.ok()) return ToGrpcStatus(key.status());
    chain.push_back(*key);
  }
  absl::StatusOr<size_t> n = store_->Lookup(*ns, chain);
  if (!n.ok()) return ToGrpcStatus(n.status());
  response->set_num_present(static_cast<uint32_t>(*n));
  return grpc::Status::OK;
}

grpc::Status CacheStoreService::Get(grpc::ServerContext* context,
                                    const kvspan::v1::GetRequest* request,
                                    grpc::ServerWriter<kvspan::v1::GetResponse>* writer) {
  absl::StatusOr<SpanKey> key = SpanKey::FromBytes(request->span_key(), "span_key");
  if (!key.ok()) return ToGrpcStatus(key.status());
  absl::StatusOr<std::optional<Value>> value = store_->Get(*key);
  if (!value.ok()) return ToGrpcStatus(value.status());
  kvspan::v1::GetResponse response;
  kvspan::v1::ValueHeader* header = response.mutable_header();
  if (!value->has_value()) {
    header->set_found(false);
    writer->Write(response);
    return grpc::Status::OK;
  }
  const std::string& payload = ***value;
  header->set_found(true);
  header->set_total_bytes(payload.size());
  header->set_checksum(ValueChecksum(payload));
  if (!writer->Write(response)) return Cancelled(context);
  const size_t chunk_bytes = static_cast<size_t>(options_.get_chunk_bytes);
  for (size_t offset = 0; offset < payload.size(); offset += chunk_bytes) {
    if (context->IsCancelled()) return Cancelled(context);
    kvspan::v1::GetResponse chunk_response;
    kvspan::v1::Chunk* chunk = chunk_response.mutable_chunk();
    chunk->set_offset(offset);
    chunk->set_data(payload.data() + offset, std::min(chunk_bytes, payload.size() - offset));
    if (!writer->Write(chunk_response)) return Cancelled(context);
  }
  return grpc::Status::OK;
}

grpc::Status CacheStoreService::Put(grpc::ServerContext* context,
                                    grpc::ServerReader<kvspan::v1::PutRequest>* reader,
                                    kvspan::v1::PutResponse* response) {
  kvspan::v1::PutRequest request;
  if (!reader->Read(&request)) {
    if (context->IsCancelled()) return Cancelled(context);
    return Invalid("Put stream ended before its header");
  }
  if (!request.has_header()) return Invalid("Put stream must start with a header message");
  const kvspan::v1::PutHeader header = request.header();
  absl::StatusOr<SpanKey> key = SpanKey::FromBytes(header.span_key(), "span_key");
  if (!key.ok()) return ToGrpcStatus(key.status());
  if (header.total_bytes() == 0) return Invalid("Put header: total_bytes is 0 (empty value)");
  const uint64_t max_value_bytes = static_cast<uint64_t>(store_->options().max_value_bytes);
  if (header.total_bytes() > max_value_bytes) {
    return ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
        "Put header: total_bytes ", header.total_bytes(), " is over the limit of ", max_value_bytes)));
  }
  std::string payload;
  payload.reserve(header.total_bytes());
  while (reader->Read(&request)) {
    if (context->IsCancelled()) return Cancelled(context);
    if (request.has_header()) return Invalid("Put stream has a second header message");
    if (!request.has_chunk()) return Invalid("Put message has neither header nor chunk");
    const kvspan::v1::Chunk& chunk = request.chunk();
    if (chunk.offset() != payload.size()) {
      return Invalid(absl::StrCat("Put chunk at offset ", chunk.offset(), ", expected ",
                                  payload.size()));
    }
    if (chunk.data().empty()) return Invalid(absl::StrCat("Put chunk at offset ", chunk.offset(), " is empty"));
    if (payload.size() + chunk.data().size() > header.total_bytes()) {
      return Invalid(absl::StrCat("Put chunks exceed total_bytes ", header.total_bytes()));
    }
    payload.append(chunk.data());
  }
  if (context->IsCancelled()) return Cancelled(context);
  if (payload.size() != header.total_bytes()) {
    return Invalid(absl::StrCat("Put stream ended after ", payload.size(), " of ",
                                header.total_bytes(), " bytes"));
  }
  return ToGrpcStatus(store_->Put(*key, payload, header.checksum()));
}

grpc::Status CacheStoreService::Delete(grpc::ServerContext* context,
                                       const kvspan::v1::DeleteRequest* request,
                                       kvspan::v1::DeleteResponse* response) {
  absl::StatusOr<SpanKey> key = SpanKey::FromBytes(request->span_key(), "span_key");
  if (!key.ok()) return ToGrpcStatus(key.status());
  return ToGrpcStatus(store_->Delete(*key));
}

grpc::Status CacheStoreService::Pin(grpc::ServerContext* context,
                                    const kvspan::v1::PinRequest* request,
                                    kvspan::v1::PinResponse* response) {
  absl::StatusOr<SpanKey> key = SpanKey::FromBytes(request->span_key(), "span_key");
  if (!key.ok()) return ToGrpcStatus(key.status());
  return ToGrpcStatus(request->pinned() ? store_->Pin(*key) : store_->Unpin(*key));
}

grpc::Status CacheStoreService::Stats(grpc::ServerContext* context,
                                      const kvspan::v1::StatsRequest* request,
                                      kvspan::v1::StatsResponse* response) {
  const StoreStats s = store_->Stats();
  response->set_memory_entries(s.memory_entries);
  response->set_memory_bytes(s.memory_bytes);
  response->set_disk_entries(s.disk_entries);
  response->set_disk_bytes(s.disk_bytes);
  response->set_pinned_entries(s.pinned_entries);
  response->set_memory_hits(s.memory_hits);
  response->set_disk_hits(s.disk_hits);
  response->set_misses(s.misses);
  response->set_memory_evictions(s.memory_evictions);
  response->set_disk_evictions(s.disk_evictions);
  response->set_checksum_failures(s.checksum_failures);
  return grpc::Status::OK;
}

}  // namespace kvspan::cachestore
