// Key derivation for the cache store (the specification is docs/key-scheme.md):
//   namespace key   = XXH3-128(SerializeNamespace(ns))
//   key(span -1)    = namespace key
//   key(span i)     = XXH3-128(key(span i-1) || token ids of span i as little-endian u32)
// Digests are written in XXH3's canonical (big-endian) byte order, so `xxhsum -H2` over
// the same bytes prints the same hex. Stable across processes, hosts and restarts.
// Thread-safe (pure functions).
#ifndef KVSPAN_CACHESTORE_KEY_SCHEME_H_
#define KVSPAN_CACHESTORE_KEY_SCHEME_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachestore/span_key.h"

namespace kvspan::cachestore {

// Limits that make a namespace well-formed.
inline constexpr size_t kMaxFingerprintBytes = 1024;
inline constexpr uint32_t kMaxSpanLength = 1 << 20;

// What a cached span's bytes depend on besides its tokens.
struct Namespace {
  std::string model_fingerprint;   // non-empty, <= kMaxFingerprintBytes
  std::string policy_fingerprint;  // non-empty, <= kMaxFingerprintBytes
  uint32_t span_length = 0;        // tokens per span, in [1, kMaxSpanLength]
  std::string tenant_salt;         // may be empty (shared cache), <= kMaxFingerprintBytes
};

// The exact bytes hashed into the namespace key (docs/key-scheme.md, "Serialization").
// InvalidArgument for a malformed namespace (empty fingerprint, span_length 0 or too
// large, a field over kMaxFingerprintBytes).
absl::StatusOr<std::string> SerializeNamespace(const Namespace& ns);

// XXH3-128 of SerializeNamespace(ns). Same errors as SerializeNamespace.
absl::StatusOr<SpanKey> NamespaceKey(const Namespace& ns);

// key(span i) from key(span i-1) and the tokens of span i. Any number of tokens is
// hashed; callers pass exactly span_length of them.
SpanKey NextSpanKey(const SpanKey& previous, absl::Span<const uint32_t> span_tokens);

// The keys of every full span of `tokens` (a trailing partial span has no key):
// result[i] = key(span i). Same errors as SerializeNamespace.
absl::StatusOr<std::vector<SpanKey>> SpanKeyChain(const Namespace& ns,
                                                  absl::Span<const uint32_t> tokens);

// XXH3-64 of `payload`: the value checksum the store and its clients use.
uint64_t ValueChecksum(absl::string_view payload);

}  // namespace kvspan::cachestore

#endif  // KVSPAN_CACHESTORE_KEY_SCHEME_H_
