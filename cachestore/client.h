// CacheClient: how the serving code talks to a cache store, wherever it runs.
// Three implementations:
//   EmbeddedCacheClient (embedded_client.h) — a CacheStore in this process;
//   RemoteCacheClient   (remote_client.h)   — one `kvspan cachestore` server over gRPC;
//   ShardedCacheClient  (sharded_client.h)  — several servers, rendezvous-hashed by key.
// Every implementation is thread-safe. Error codes are the store's (store.h) plus, for
// remote ones, Unavailable (server down) and DeadlineExceeded (Options deadline).
#ifndef KVSPAN_CACHESTORE_CLIENT_H_
#define KVSPAN_CACHESTORE_CLIENT_H_

#include <cstddef>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cachestore/span_key.h"
#include "cachestore/stats.h"
#include "cachestore/types.h"

namespace kvspan::cachestore {

class CacheClient {
 public:
  virtual ~CacheClient() = default;

  // How many leading keys of `chain` are present. InvalidArgument for an all-zero
  // namespace key or more than kMaxLookupKeys keys.
  virtual absl::StatusOr<size_t> Lookup(const SpanKey& namespace_key,
                                        absl::Span<const SpanKey> chain) = 0;
  // The value, or nullopt on a miss (corrupt values are misses). The value's checksum
  // has been verified by the store and, for remote clients, again after transfer
  // (DataLoss if the transfer corrupted it).
  virtual absl::StatusOr<std::optional<Value>> Get(const SpanKey& key) = 0;
  // Stores `payload`; the client computes its checksum. Visible once OK is returned.
  // InvalidArgument (empty), ResourceExhausted (too large / budget full of pins).
  virtual absl::Status Put(const SpanKey& key, absl::string_view payload) = 0;
  // OK also if absent.
  virtual absl::Status Delete(const SpanKey& key) = 0;
  // NotFound if absent; ResourceExhausted if pinned values would exceed memory.
  virtual absl::Status Pin(const SpanKey& key) = 0;
  virtual absl::Status Unpin(const SpanKey& key) = 0;
  virtual absl::StatusOr<StoreStats> Stats() = 0;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_CLIENT_H_
