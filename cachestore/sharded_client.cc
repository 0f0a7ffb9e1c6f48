#include "cachestore/sharded_client.h"

#include <future>
#include <string>
#include <utility>

#include <xxhash.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvspan::cachestore {

absl::StatusOr<std::unique_ptr<ShardedCacheClient>> ShardedCacheClient::Create(
    std::vector<CacheShard> shards) {
  if (shards.empty()) return absl::InvalidArgumentError("ShardedCacheClient: no shards");
  absl::flat_hash_set<std::string> names;
  for (const CacheShard& shard : shards) {
    if (shard.name.empty()) return absl::InvalidArgumentError("ShardedCacheClient: a shard has no name");
    if (shard.client == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("ShardedCacheClient: shard ", shard.name, " has no client"));
    }
    if (!names.insert(shard.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("ShardedCacheClient: shard name ", shard.name, " repeated"));
    }
  }
  return std::unique_ptr<ShardedCacheClient>(new ShardedCacheClient(std::move(shards)));
}

absl::StatusOr<std::unique_ptr<ShardedCacheClient>> ShardedCacheClient::CreateRemote(
    const std::vector<std::string>& targets, const RemoteClientOptions& base) {
  std::vector<CacheShard> shards;
  for (const std::string& target : targets) {
    RemoteClientOptions options = base;
    options.target = target;
    ASSIGN_OR_RETURN(std::unique_ptr<RemoteCacheClient> client, RemoteCacheClient::Create(options));
    shards.push_back(CacheShard{target, std::move(client)});
  }
  return Create(std::move(shards));
}

size_t ShardedCacheClient::ShardFor(const SpanKey& key) const {
  size_t best = 0;
  uint64_t best_score = 0;
  std::string buf;
  for (size_t i = 0; i < shards_.size(); ++i) {
    buf.assign(key.AsStringView().data(), SpanKey::kSize);
    buf.append(shards_[i].name);
    const uint64_t score = XXH3_64bits(buf.data(), buf.size());
    if (i == 0 || score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

absl::StatusOr<size_t> ShardedCacheClient::Lookup(const SpanKey& namespace_key,
                                                  absl::Span<const SpanKey> chain) {
  RETURN_IF_ERROR(ValidateLookupRequest(namespace_key, chain.size()));
  // owner[i] and rank[i]: span i is the rank[i]-th key of shard owner[i]'s sub-chain.
  std::vector<size_t> owner(chain.size()), rank(chain.size());
  std::vector<std::vector<SpanKey>> sub(shards_.size());
  for (size_t i = 0; i < chain.size(); ++i) {
    owner[i] = ShardFor(chain[i]);
    rank[i] = sub[owner[i]].size();
    sub[owner[i]].push_back(chain[i]);
  }
  std::vector<std::future<absl::StatusOr<size_t>>> futures(shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (sub[s].empty()) continue;
    futures[s] = std::async(std::launch::async, [this, s, &sub, &namespace_key] {
      return shards_[s].client->Lookup(namespace_key, sub[s]);
    });
  }
  std::vector<size_t> present(shards_.size(), 0);
  absl::Status first_error;
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (!futures[s].valid()) continue;
    absl::StatusOr<size_t> n = futures[s].get();
    if (!n.ok()) {
      if (first_error.ok()) {
        first_error = absl::Status(n.status().code(),
                                   absl::StrCat("shard ", shards_[s].name, ": ", n.status().message()));
      }
      continue;
    }
    present[s] = *n;
  }
  if (!first_error.ok()) return first_error;
  size_t n = 0;
  while (n < chain.size() && rank[n] < present[owner[n]]) ++n;
  return n;
}

absl::StatusOr<std::optional<Value>> ShardedCacheClient::Get(const SpanKey& key) {
  return shards_[ShardFor(key)].client->Get(key);
}
absl::Status ShardedCacheClient::Put(const SpanKey& key, absl::string_view payload) {
  return shards_[ShardFor(key)].client->Put(key, payload);
}
absl::Status ShardedCacheClient::Delete(const SpanKey& key) {
  return shards_[ShardFor(key)].client->Delete(key);
}
absl::Status ShardedCacheClient::Pin(const SpanKey& key) {
  return shards_[ShardFor(key)].client->Pin(key);
}
absl::Status ShardedCacheClient::Unpin(const SpanKey& key) {
  return shards_[ShardFor(key)].client->Unpin(key);
}

absl::StatusOr<StoreStats> ShardedCacheClient::Stats() {
  StoreStats total;
  for (const CacheShard& shard : shards_) {
    ASSIGN_OR_RETURN(StoreStats s, shard.client->Stats());
    total.Add(s);
  }
  return total;
}

}  // namespace kvspan::cachestore
