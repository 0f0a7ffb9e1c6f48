#include "cachestore/embedded_client.h"

#include <utility>

#include "cachestore/key_scheme.h"
#include "common/logging.h"

namespace kvspan::cachestore {

EmbeddedCacheClient::EmbeddedCacheClient(std::shared_ptr<CacheStore> store)
    : store_(std::move(store)) {
  CHECK(store_ != nullptr);
}

absl::StatusOr<size_t> EmbeddedCacheClient::Lookup(const SpanKey& namespace_key,
                                                    absl::Span<const SpanKey> chain) {
  return store_->Lookup(namespace_key, chain);
}

absl::StatusOr<std::optional<Value>> EmbeddedCacheClient::Get(const SpanKey& key) {
  return store_->Get(key);
}

absl::Status EmbeddedCacheClient::Put(const SpanKey& key, absl::string_view payload) {
  return store_->Put(key, payload, ValueChecksum(payload));
}

absl::Status EmbeddedCacheClient::Delete(const SpanKey& key) { return store_->Delete(key); }
absl::Status EmbeddedCacheClient::Pin(const SpanKey& key) { return store_->Pin(key); }
absl::Status EmbeddedCacheClient::Unpin(const SpanKey& key) { return store_->Unpin(key); }
absl::StatusOr<StoreStats> EmbeddedCacheClient::Stats() { return store_->Stats(); }

}  // namespace kvspan::cachestore
