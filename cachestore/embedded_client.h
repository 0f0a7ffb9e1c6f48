// EmbeddedCacheClient: a CacheClient over a CacheStore in the same process (what
// `kvspan serve` uses). No copies beyond the store's own. Thread-safe.
#ifndef KVSPAN_CACHESTORE_EMBEDDED_CLIENT_H_
#define KVSPAN_CACHESTORE_EMBEDDED_CLIENT_H_

#include <memory>

#include "cachestore/client.h"
#include "cachestore/store.h"

namespace kvspan::cachestore {

class EmbeddedCacheClient : public CacheClient {
 public:
  // Shares ownership of `store` (REQUIRES: non-null).
  explicit EmbeddedCacheClient(std::shared_ptr<CacheStore> store);

  absl::StatusOr<size_t> Lookup(const SpanKey& namespace_key,
                                absl::Span<const SpanKey> chain) override;
  absl::StatusOr<std::optional<Value>> Get(const SpanKey& key) override;
  absl::Status Put(const SpanKey& key, absl::string_view payload) override;
  absl::Status Delete(const SpanKey& key) override;
  absl::Status Pin(const SpanKey& key) override;
  absl::Status Unpin(const SpanKey& key) override;
  absl::StatusOr<StoreStats> Stats() override;

 private:
  std::shared_ptr<CacheStore> store_;
};

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_EMBEDDED_CLIENT_H_
