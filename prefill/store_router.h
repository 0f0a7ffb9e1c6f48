// StoreRouter: the SpanStore of each cache-store namespace a node serves — one per
// (policy, tenant) pair, made on first use over the node's one CacheClient (the model
// fingerprint and span length are the node's). Policies that may not write to the store
// (dense, query-aware) get none. Thread-safe.
#ifndef KVSPAN_PREFILL_STORE_ROUTER_H_
#define KVSPAN_PREFILL_STORE_ROUTER_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "cachestore/client.h"
#include "kvcache/cache_policy.h"
#include "model/config.h"
#include "prefill/span_store.h"

namespace kvspan::prefill {

struct StoreRouterOptions {
  std::shared_ptr<cachestore::CacheClient> client;  // non-null
  std::string model_fingerprint;
  kvcache::SpanGeometry geometry;                   // the model's, span_tokens = S
  int get_threads = 4;                              // parallel Gets per LoadPrefix
  int put_threads = 1;                              // background Puts per namespace
};

class StoreRouter {
 public:
  explicit StoreRouter(StoreRouterOptions options) : options_(std::move(options)) {}

  // The namespace's store, or null when `policy` is not storable (or the namespace is
  // malformed, which is logged).
  std::shared_ptr<SpanStore> For(const kvcache::CachePolicy& policy, const std::string& tenant);
  // Waits for every queued Put of every namespace.
  void FlushAll();
  const std::shared_ptr<cachestore::CacheClient>& client() const { return options_.client; }

 private:
  const StoreRouterOptions options_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<SpanStore>> stores_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvspan::prefill

#endif  // KVSPAN_PREFILL_STORE_ROUTER_H_
