// ShardedCacheClient: a CacheClient over several stores (normally RemoteCacheClients).
// Each span key lives on exactly one shard, its rendezvous owner: the shard whose
// XXH3-64(key bytes || shard name bytes) is highest. Adding or removing a shard moves
// only the keys that shard wins or owned.
// Lookup of a chain whose spans live on different shards: each shard is asked, in
// parallel, for the sub-chain of keys it owns (in chain order); span i counts as present
// iff it is within its owner's leading run. The answer is the longest leading run of the
// whole chain whose spans are each present on their owner — the same answer a single
// store holding every shard's keys would give. If any asked shard fails, Lookup fails
// with that shard's error (the caller treats it as a miss if it likes).
// Thread-safe.
#ifndef KVSPAN_CACHESTORE_SHARDED_CLIENT_H_
#define KVSPAN_CACHESTORE_SHARDED_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "cachestore/client.h"
#include "cachestore/remote_client.h"

namespace kvspan::cachestore {

struct CacheShard {
  // Stable identity hashed for rendezvous (e.g. the address); unique, non-empty.
  std::string name;
  std::unique_ptr<CacheClient> client;
};

class ShardedCacheClient : public CacheClient {
 public:
  // InvalidArgument if `shards` is empty, or a name is empty or repeated, or a client null.
  static absl::StatusOr<std::unique_ptr<ShardedCacheClient>> Create(std::vector<CacheShard> shards);
  // One RemoteCacheClient per target (named by its target), each with `base` options.
  static absl::StatusOr<std::unique_ptr<ShardedCacheClient>> CreateRemote(
      const std::vector<std::string>& targets, const RemoteClientOptions& base);

  // The index (into the shards given to Create) of the shard that owns `key`.
  size_t ShardFor(const SpanKey& key) const;
  size_t num_shards() const { return shards_.size(); }

  absl::StatusOr<size_t> Lookup(const SpanKey& namespace_key,
                                absl::Span<const SpanKey> chain) override;
  absl::StatusOr<std::optional<Value>> Get(const SpanKey& key) override;
  absl::Status Put(const SpanKey& key, absl::string_view payload) override;
  absl::Status Delete(const SpanKey& key) override;
  absl::Status Pin(const SpanKey& key) override;
  absl::Status Unpin(const SpanKey& key) override;
  // The sum over all shards; fails with the first shard's error.
  absl::StatusOr<StoreStats> Stats() override;

 private:
  explicit ShardedCacheClient(std::vector<CacheShard> shards) : shards_(std::move(shards)) {}
  std::vector<CacheShard> shards_;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_SHARDED_CLIENT_H_
