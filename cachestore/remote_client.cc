#include "cachestore/remote_client.h"

#include <algorithm>
#include <chrono>
#include <string>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/strings/str_cat.h"
#include "cachestore/key_scheme.h"
#include "proto/status_conversion.h"

namespace kvspan::cachestore {

using ::kvspan::proto::FromGrpcStatus;

absl::StatusOr<std::unique_ptr<RemoteCacheClient>> RemoteCacheClient::Create(
    const RemoteClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("RemoteClientOptions.target is empty");
  if (options.timeout_ms <= 0 || options.chunk_bytes <= 0 ||
      options.max_receive_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        "RemoteClientOptions: timeout_ms, chunk_bytes and max_receive_message_bytes must be positive");
  }
  return std::unique_ptr<RemoteCacheClient>(new RemoteCacheClient(options));
}

RemoteCacheClient::RemoteCacheClient(const RemoteClientOptions& options) : options_(options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_message_bytes));
  args.SetMaxSendMessageSize(-1);  // the server enforces its own limit
  channel_ = grpc::CreateCustomChannel(
      options_.target, options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(),
      args);
  stub_ = kvspan::v1::CacheStore::NewStub(channel_);
}

void RemoteCacheClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(options_.timeout_ms));
}

absl::StatusOr<size_t> RemoteCacheClient::Lookup(const SpanKey& namespace_key,
                                                 absl::Span<const SpanKey> chain) {
  kvspan::v1::LookupRequest request;
  request.set_namespace_key(namespace_key.ToBytes());
  for (const SpanKey& key : chain) request.add_span_keys(key.ToBytes());
  kvspan::v1::LookupResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status s = stub_->Lookup(&context, request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  if (response.num_present() > chain.size()) {
    return absl::InternalError(absl::StrCat("server says ", response.num_present(),
                                            " of ", chain.size(), " keys are present"));
  }
  return static_cast<size_t>(response.num_present());
}

absl::StatusOr<std::optional<Value>> RemoteCacheClient::Get(const SpanKey& key) {
  kvspan::v1::GetRequest request;
  request.set_span_key(key.ToBytes());
  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<grpc::ClientReader<kvspan::v1::GetResponse>> reader =
      stub_->Get(&context, request);
  kvspan::v1::GetResponse response;
  absl::Status broken;
  bool found = false;
  uint64_t total_bytes = 0;
  uint64_t checksum = 0;
  auto value = std::make_shared<std::string>();
  if (!reader->Read(&response)) {
    // No header: the status says why.
  } else if (!response.has_header()) {
    broken = absl::DataLossError("Get stream did not start with a header");
  } else {
    found = response.header().found();
    total_bytes = response.header().total_bytes();
    checksum = response.header().checksum();
    if (found) value->reserve(total_bytes);
    while (broken.ok() && reader->Read(&response)) {
      if (!response.has_chunk() || response.chunk().offset() != value->size() ||
          value->size() + response.chunk().data().size() > total_bytes) {
        broken = absl::DataLossError("Get stream has a broken chunk sequence");
        break;
      }
      value->append(response.chunk().data());
    }
  }
  if (!broken.ok()) {
    context.TryCancel();
    reader->Finish();
    return broken;
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return FromGrpcStatus(s);
  if (!found) return std::nullopt;
  if (value->size() != total_bytes || ValueChecksum(*value) != checksum) {
    return absl::DataLossError(absl::StrCat("Get of ", key.ToHex(),
                                            ": value corrupted in transfer"));
  }
  return Value(std::move(value));
}

absl::Status RemoteCacheClient::Put(const SpanKey& key, absl::string_view payload) {
  grpc::ClientContext context;
  SetDeadline(&context);
  kvspan::v1::PutResponse response;
  std::unique_ptr<grpc::ClientWriter<kvspan::v1::PutRequest>> writer =
      stub_->Put(&context, &response);
  kvspan::v1::PutRequest request;
  kvspan::v1::PutHeader* header = request.mutable_header();
  header->set_span_key(key.ToBytes());
  header->set_total_bytes(payload.size());
  header->set_checksum(ValueChecksum(payload));
  bool ok = writer->Write(request);
  const size_t chunk_bytes = static_cast<size_t>(options_.chunk_bytes);
  for (size_t offset = 0; ok && offset < payload.size(); offset += chunk_bytes) {
    kvspan::v1::PutRequest chunk_request;
    kvspan::v1::Chunk* chunk = chunk_request.mutable_chunk();
    chunk->set_offset(offset);
    chunk->set_data(payload.data() + offset, std::min(chunk_bytes, payload.size() - offset));
    ok = writer->Write(chunk_request);
  }
  if (ok) writer->WritesDone();
  return FromGrpcStatus(writer->Finish());
}

absl::Status RemoteCacheClient::Delete(const SpanKey& key) {
  kvspan::v1::DeleteRequest request;
  request.set_span_key(key.ToBytes());
  kvspan::v1::DeleteResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  return FromGrpcStatus(stub_->Delete(&context, request, &response));
}

absl::Status RemoteCacheClient::SetPinned(const SpanKey& key, bool pinned) {
  kvspan::v1::PinRequest request;
  request.set_span_key(key.ToBytes());
  request.set_pinned(pinned);
  kvspan::v1::PinResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  return FromGrpcStatus(stub_->Pin(&context, request, &response));
}

absl::Status RemoteCacheClient::Pin(const SpanKey& key) { return SetPinned(key, true); }
absl::Status RemoteCacheClient::Unpin(const SpanKey& key) { return SetPinned(key, false); }

absl::StatusOr<StoreStats> RemoteCacheClient::Stats() {
  kvspan::v1::StatsRequest request;
  kvspan::v1::StatsResponse r;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status s = stub_->Stats(&context, request, &r);
  if (!s.ok()) return FromGrpcStatus(s);
  StoreStats stats;
  stats.memory_entries = r.memory_entries();
  stats.memory_bytes = r.memory_bytes();
  stats.disk_entries = r.disk_entries();
  stats.disk_bytes = r.disk_bytes();
  stats.pinned_entries = r.pinned_entries();
  stats.memory_hits = r.memory_hits();
  stats.disk_hits = r.disk_hits();
  stats.misses = r.misses();
  stats.memory_evictions = r.memory_evictions();
  stats.disk_evictions = r.disk_evictions();
  stats.checksum_failures = r.checksum_failures();
  return stats;
}

}  // namespace kvspan::cachestore
