// SessionStore: multi-turn session records kept in the cache store beside the spans, so
// any frontend replica, or a restarted server, continues a session. A record is a
// kvspan.v1.SessionRecord (proto/kvspan/v1/session.proto) stored under SessionKey(id)
// (docs/key-scheme.md, "Session keys") and pinned, so the store's LRU never evicts it.
// A session idle for longer than its timeout is expired: every call treats it as absent
// and deletes it.
//
// Thread-safe. Calls for the same id are serialized within one SessionStore; across
// processes the last Update wins (the store has no compare-and-set).
#ifndef KVSPAN_PREFILL_SESSION_STORE_H_
#define KVSPAN_PREFILL_SESSION_STORE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cachestore/client.h"
#include "cachestore/span_key.h"

namespace kvspan::prefill {

// Length of a session id: 128 random bits as lowercase hex.
inline constexpr size_t kSessionIdHexDigits = 32;

// One session. A value type.
// The policy name of an uncompressed cache (kvcache::kDensePolicy; kvcache_runtime is not a
// dependency of this library).
inline constexpr absl::string_view kDensePolicyName = "dense";

struct Session {
  std::string id;               // kSessionIdHexDigits lowercase hex digits
  std::vector<int32_t> tokens;  // every earlier turn's prompt and generated tokens
  std::string policy;           // canonical compression policy string
  int span_tokens = 0;          // S
  int64_t created_ms = 0;       // unix ms
  int64_t last_use_ms = 0;      // unix ms of Open or the last Update
  int64_t idle_timeout_ms = 0;  // 0: never expires
  int64_t num_turns = 0;        // Updates so far
  std::string tenant;           // the cache-store namespace's tenant salt of its spans

  friend bool operator==(const Session&, const Session&) = default;
};

// The store key of session `id`: XXH3-128("kvspan.session.v1" || id), canonical byte order
// (docs/key-scheme.md, "Session keys"). InvalidArgument for a malformed id.
absl::StatusOr<cachestore::SpanKey> SessionKey(absl::string_view id);

struct SessionStoreOptions {
  // Where records live: the same CacheClient as the spans. Required; shared.
  std::shared_ptr<cachestore::CacheClient> client;
  // Unix time in ms. Empty: the system clock. Tests inject a fake clock.
  std::function<int64_t()> now_ms;
};

class SessionStore {
 public:
  // InvalidArgument for a null client.
  static absl::StatusOr<std::unique_ptr<SessionStore>> Create(SessionStoreOptions options);

  // Creates a session with a fresh random id (getrandom(2)), an empty history, `policy` in
  // canonical form, created = last use = now, and stores and pins it. ParsePolicy's errors
  // (InvalidArgument; NotFound for an unreadable `@path` head set), InvalidArgument for
  // span_tokens outside [1, kvcache::kMaxSpanTokens] or a negative idle timeout; Internal
  // if no random bytes can be read; the store's errors (Unavailable, DeadlineExceeded,
  // ResourceExhausted when pinned records would exceed the memory budget: the record is
  // then deleted again).
  // `policy` may also be "dense" (kDensePolicyName: an uncompressed cache), kept as is.
  absl::StatusOr<Session> Open(absl::string_view policy, int span_tokens, int64_t idle_timeout_ms,
                               absl::string_view tenant = "");

  // The session's record. InvalidArgument for a malformed id; NotFound("session <id> not
  // found") if unknown; NotFound("session <id> expired ...") if idle for longer than its
  // timeout (the record is deleted); DataLoss if the stored bytes do not parse or are not
  // a well-formed record of this id; the store's errors.
  absl::StatusOr<Session> Get(absl::string_view id);

  // Records a finished turn: stores `session.tokens` as the history, last use = now,
  // num_turns + 1, and returns the new record. Only `tokens` is taken from `session`
  // besides `id` and `num_turns`, which must be those of the stored record (the one the
  // caller read): Aborted otherwise (another turn was recorded meanwhile). Synchronous:
  // OK means the store acknowledged the write (durable as its StoreOptions.sync says).
  // Errors of Get, plus the store's errors on the write.
  absl::StatusOr<Session> Update(const Session& session);

  // Deletes the session. Errors of Get (NotFound for unknown or expired ids).
  absl::Status Close(absl::string_view id);

 private:
  static constexpr int kNumStripes = 16;

  explicit SessionStore(SessionStoreOptions options);
  std::mutex& Stripe(const cachestore::SpanKey& key) { return stripes_[key.bytes[15] % kNumStripes]; }
  // Get's work. REQUIRES: Stripe(key) held.
  absl::StatusOr<Session> GetLocked(absl::string_view id, const cachestore::SpanKey& key);

  const SessionStoreOptions options_;
  // Serialize the read-check-write of one id (Update against Close, expiry against
  // Update). Never more than one held.
  std::array<std::mutex, kNumStripes> stripes_;
};

}  // namespace kvspan::prefill

#endif  // KVSPAN_PREFILL_SESSION_STORE_H_
