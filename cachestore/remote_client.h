// RemoteCacheClient: a CacheClient that talks to one `kvspan cachestore` server over
// gRPC. Every call carries a deadline of Options.timeout_ms; values travel in chunks of
// Options.chunk_bytes and are verified against the server's checksum after transfer.
// Thread-safe (one channel shared by all calls).
#ifndef KVSPAN_CACHESTORE_REMOTE_CLIENT_H_
#define KVSPAN_CACHESTORE_REMOTE_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include <grpcpp/security/credentials.h>

#include "cachestore/client.h"
#include "kvspan/v1/cachestore.grpc.pb.h"

namespace kvspan::cachestore {

struct RemoteClientOptions {
  // host:port of the server. Required.
  std::string target;
  // Deadline of every call, from its start (a large Get or Put included).
  int64_t timeout_ms = 30000;
  // Payload bytes per Put chunk; must fit the server's max receive message size.
  int64_t chunk_bytes = int64_t{1} << 20;
  // Largest message accepted from the server (bounds a Get chunk).
  int64_t max_receive_message_bytes = kDefaultMaxMessageBytes;
  // The channel's credentials (TLS, a client certificate); null = plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class RemoteCacheClient : public CacheClient {
 public:
  // Creates the channel (connection is lazy: a down server shows up as Unavailable on
  // the first call). InvalidArgument for an empty target or non-positive sizes.
  static absl::StatusOr<std::unique_ptr<RemoteCacheClient>> Create(
      const RemoteClientOptions& options);

  absl::StatusOr<size_t> Lookup(const SpanKey& namespace_key,
                                absl::Span<const SpanKey> chain) override;
  // DataLoss if the streamed value is inconsistent (chunk offsets, length or checksum).
  absl::StatusOr<std::optional<Value>> Get(const SpanKey& key) override;
  absl::Status Put(const SpanKey& key, absl::string_view payload) override;
  absl::Status Delete(const SpanKey& key) override;
  absl::Status Pin(const SpanKey& key) override;
  absl::Status Unpin(const SpanKey& key) override;
  absl::StatusOr<StoreStats> Stats() override;

  const std::string& target() const { return options_.target; }

 private:
  explicit RemoteCacheClient(const RemoteClientOptions& options);
  void SetDeadline(grpc::ClientContext* context) const;
  absl::Status SetPinned(const SpanKey& key, bool pinned);

  const RemoteClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<kvspan::v1::CacheStore::Stub> stub_;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_REMOTE_CLIENT_H_
