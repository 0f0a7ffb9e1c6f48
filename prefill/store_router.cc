#include "prefill/store_router.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace kvspan::prefill {

std::shared_ptr<SpanStore> StoreRouter::For(const kvcache::CachePolicy& policy, const std::string& tenant) {
  if (!policy.storable()) return nullptr;
  const std::string name = absl::StrCat(policy.canonical(), "\n", tenant);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stores_.find(name);
  if (it != stores_.end()) return it->second;
  SpanStoreOptions o;
  o.client = options_.client;
  o.model_fingerprint = options_.model_fingerprint;
  o.policy = policy.canonical();
  o.policy_fingerprint = policy.policy().fingerprint();
  o.tenant_salt = tenant;
  o.geometry = options_.geometry;
  o.num_get_threads = options_.get_threads;
  o.num_put_threads = options_.put_threads;
  absl::StatusOr<std::unique_ptr<SpanStore>> store = SpanStore::Create(o);
  if (!store.ok()) {
    LOG(WARNING) << "prefill: no cache-store namespace for policy " << policy.canonical() << ": "
                 << store.status();
    return nullptr;
  }
  std::shared_ptr<SpanStore> shared = std::move(*store);
  stores_.emplace(name, shared);
  return shared;
}

void StoreRouter::FlushAll() {
  std::vector<std::shared_ptr<SpanStore>> stores;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, store] : stores_) stores.push_back(store);
  }
  for (const auto& store : stores) store->Flush();
}

SpanStoreStats StoreRouter::TotalStats() const {
  SpanStoreStats total;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, store] : stores_) total += store->stats();
  return total;
}

}  // namespace kvspan::prefill
