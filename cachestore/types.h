// What the cache store and every client of it share: the value type, the limits of one
// call, and the checks every Lookup makes. Kept apart from store.h so that a client-only
// process (target kvspan::cachestore_client) links neither RocksDB nor the store.
// Thread-safe (pure functions and constants).
#ifndef KVSPAN_CACHESTORE_TYPES_H_
#define KVSPAN_CACHESTORE_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "cachestore/span_key.h"

namespace kvspan::cachestore {

// An immutable value shared between the memory tier and readers.
using Value = std::shared_ptr<const std::string>;

// The most keys one Lookup may carry.
inline constexpr size_t kMaxLookupKeys = 1 << 16;

// Default cap on one received gRPC message: a 4 MiB chunk plus framing.
inline constexpr int64_t kDefaultMaxMessageBytes = (int64_t{4} << 20) + (int64_t{64} << 10);

// The checks every Lookup makes before it looks (store, service, sharded client):
// InvalidArgument if `namespace_key` is all zero (an unset namespace) or `num_keys`
// exceeds kMaxLookupKeys.
absl::Status ValidateLookupRequest(const SpanKey& namespace_key, size_t num_keys);

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_TYPES_H_
