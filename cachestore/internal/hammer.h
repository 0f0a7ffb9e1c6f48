// Test-only: many threads doing random Put, Get, Delete, Pin/Unpin and Lookup on the
// same few keys through one CacheClient; every Get must return a whole, known value.
#ifndef KVSPAN_CACHESTORE_INTERNAL_HAMMER_H_
#define KVSPAN_CACHESTORE_INTERNAL_HAMMER_H_

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cachestore/client.h"
#include "cachestore/internal/test_util.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore::testing {

constexpr int kNumKeys = 12;
constexpr int kVariants = 3;

// Value variant v of key k: Gets must return exactly one of these, whole.
inline std::string VariantOf(int k, int v) { return Payload(k * 100 + v, 3000 + 1000 * v); }

inline bool IsAVariant(int k, const std::string& value) {
  for (int v = 0; v < kVariants; ++v) {
    if (value == VariantOf(k, v)) return true;
  }
  return false;
}

// Runs `num_threads` threads of random operations on `client`; returns bad Gets seen.
inline int Hammer(CacheClient& client, int num_threads, int ops_per_thread) {
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < num_threads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < ops_per_thread; ++i) {
        const int k = rng() % kNumKeys;
        const SpanKey key = TestKey(k);
        switch (rng() % 8) {
          case 0:
          case 1:
          {
            // ResourceExhausted: the disk budget is momentarily full of pinned values.
            absl::Status s = client.Put(key, VariantOf(k, rng() % kVariants));
            if (!s.ok() && s.code() != absl::StatusCode::kResourceExhausted) ++bad;
            break;
          }
          case 2:
          case 3:
          case 4: {
            absl::StatusOr<std::optional<Value>> v = client.Get(key);
            if (!v.ok() || (v->has_value() && !IsAVariant(k, ***v))) {
              ADD_FAILURE() << "Get of key " << k << ": " << v.status();
              ++bad;
            }
            break;
          }
          case 5:
            if (!client.Delete(key).ok()) ++bad;
            break;
          case 6: {
            absl::Status s = (rng() % 2) ? client.Pin(key) : client.Unpin(key);
            // NotFound: absent; ResourceExhausted: pinned values would exceed memory.
            if (!s.ok() && s.code() != absl::StatusCode::kNotFound &&
                s.code() != absl::StatusCode::kResourceExhausted) {
              ADD_FAILURE() << s;
              ++bad;
            }
            break;
          }
          case 7: {
            std::vector<SpanKey> chain = {TestKey(0), TestKey(1), TestKey(2)};
            absl::StatusOr<size_t> n = client.Lookup(TestKey(999), chain);
            if (!n.ok() || *n > 3) ++bad;
            break;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  return bad.load();
}

}  // namespace kvspan::cachestore::testing

#endif  // KVSPAN_CACHESTORE_INTERNAL_HAMMER_H_
