#include "prefill/session_store.h"

#include <errno.h>
#include <sys/random.h>
#include <xxhash.h>

#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "kvcache/policy.h"
#include "kvcache/span_geometry.h"
#include "kvspan/v1/session.pb.h"

namespace kvspan::prefill {

using cachestore::SpanKey;

namespace {

// The domain tag hashed before the id (docs/key-scheme.md, "Session keys").
constexpr absl::string_view kSessionDomain = "kvspan.session.v1";

absl::Status CheckId(absl::string_view id) {
  bool ok = id.size() == kSessionIdHexDigits;
  for (char c : id) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("malformed session id \"", absl::CHexEscape(id),
                                                   "\": want ", kSessionIdHexDigits,
                                                   " lowercase hex digits"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NewSessionId() {
  unsigned char bytes[kSessionIdHexDigits / 2];
  size_t filled = 0;
  while (filled < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + filled, sizeof(bytes) - filled, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    filled += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

std::string Encode(const Session& s) {
  kvspan::v1::SessionRecord r;
  r.set_session_id(s.id);
  r.mutable_tokens()->Add(s.tokens.begin(), s.tokens.end());
  r.set_policy(s.policy);
  r.set_span_tokens(static_cast<uint32_t>(s.span_tokens));
  r.set_created_unix_ms(s.created_ms);
  r.set_last_use_unix_ms(s.last_use_ms);
  r.set_idle_timeout_ms(s.idle_timeout_ms);
  r.set_num_turns(s.num_turns);
  r.set_tenant(s.tenant);
  return r.SerializeAsString();
}

absl::StatusOr<Session> Decode(absl::string_view id, const std::string& bytes) {
  kvspan::v1::SessionRecord r;
  if (!r.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("session ", id, ": the stored record does not parse"));
  }
  if (r.session_id() != id || r.policy().empty() || r.span_tokens() < 1 ||
      r.span_tokens() > static_cast<uint32_t>(kvcache::kMaxSpanTokens) || r.idle_timeout_ms() < 0 ||
      r.num_turns() < 0) {
    return absl::DataLossError(absl::StrCat("session ", id, ": the stored record is malformed"));
  }
  Session s;
  s.id = r.session_id();
  s.tokens.assign(r.tokens().begin(), r.tokens().end());
  s.policy = r.policy();
  s.span_tokens = static_cast<int>(r.span_tokens());
  s.created_ms = r.created_unix_ms();
  s.last_use_ms = r.last_use_unix_ms();
  s.idle_timeout_ms = r.idle_timeout_ms();
  s.num_turns = r.num_turns();
  s.tenant = r.tenant();
  return s;
}

}  // namespace

absl::StatusOr<SpanKey> SessionKey(absl::string_view id) {
  RETURN_IF_ERROR(CheckId(id));
  const std::string input = absl::StrCat(kSessionDomain, id);
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(input.data(), input.size()));
  SpanKey key;
  static_assert(sizeof(canonical.digest) == SpanKey::kSize);
  std::memcpy(key.bytes.data(), canonical.digest, SpanKey::kSize);
  return key;
}

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Create(SessionStoreOptions options) {
  if (options.client == nullptr) return absl::InvalidArgumentError("SessionStoreOptions.client is null");
  if (!options.now_ms) options.now_ms = [] { return absl::ToUnixMillis(absl::Now()); };
  return std::unique_ptr<SessionStore>(new SessionStore(std::move(options)));
}

SessionStore::SessionStore(SessionStoreOptions options) : options_(std::move(options)) {}

absl::StatusOr<Session> SessionStore::Open(absl::string_view policy, int span_tokens,
                                           int64_t idle_timeout_ms, absl::string_view tenant) {
  std::string canonical(policy);
  if (policy != kDensePolicyName) {
    absl::StatusOr<kvcache::Policy> parsed = kvcache::ParsePolicy(policy);
    if (!parsed.ok()) return parsed.status();
    canonical = parsed->ToString();
  }
  if (span_tokens < 1 || span_tokens > kvcache::kMaxSpanTokens) {
    return absl::InvalidArgumentError(absl::StrCat("span_tokens ", span_tokens, " is outside [1, ",
                                                   kvcache::kMaxSpanTokens, "]"));
  }
  if (idle_timeout_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat("idle_timeout_ms ", idle_timeout_ms, " is negative"));
  }
  Session s;
  ASSIGN_OR_RETURN(s.id, NewSessionId());
  s.policy = std::move(canonical);
  s.tenant = std::string(tenant);
  s.span_tokens = span_tokens;
  s.created_ms = s.last_use_ms = options_.now_ms();
  s.idle_timeout_ms = idle_timeout_ms;
  ASSIGN_OR_RETURN(const SpanKey key, SessionKey(s.id));
  std::lock_guard<std::mutex> lock(Stripe(key));
  RETURN_IF_ERROR(options_.client->Put(key, Encode(s)));
  if (absl::Status pinned = options_.client->Pin(key); !pinned.ok()) {
    // An unpinned record could be evicted: better no session than one that may vanish.
    (void)options_.client->Delete(key);
    return pinned;
  }
  return s;
}

absl::StatusOr<Session> SessionStore::GetLocked(absl::string_view id, const SpanKey& key) {
  ASSIGN_OR_RETURN(std::optional<cachestore::Value> value, options_.client->Get(key));
  if (!value.has_value()) return absl::NotFoundError(absl::StrCat("session ", id, " not found"));
  ASSIGN_OR_RETURN(Session s, Decode(id, **value));
  const int64_t idle_ms = options_.now_ms() - s.last_use_ms;
  if (s.idle_timeout_ms > 0 && idle_ms > s.idle_timeout_ms) {
    // Delete removes pinned entries too (CacheClient::Delete): no Unpin needed.
    RETURN_IF_ERROR(options_.client->Delete(key));
    return absl::NotFoundError(absl::StrCat("session ", id, " expired after ", idle_ms,
                                            " ms idle (timeout ", s.idle_timeout_ms, " ms)"));
  }
  return s;
}

absl::StatusOr<Session> SessionStore::Get(absl::string_view id) {
  ASSIGN_OR_RETURN(const SpanKey key, SessionKey(id));
  std::lock_guard<std::mutex> lock(Stripe(key));
  return GetLocked(id, key);
}

absl::StatusOr<Session> SessionStore::Update(const Session& session) {
  ASSIGN_OR_RETURN(const SpanKey key, SessionKey(session.id));
  std::lock_guard<std::mutex> lock(Stripe(key));
  ASSIGN_OR_RETURN(Session s, GetLocked(session.id, key));
  if (session.num_turns != s.num_turns) {
    return absl::AbortedError(absl::StrCat("session ", session.id, " is at turn ", s.num_turns,
                                           ", the update was made at turn ", session.num_turns));
  }
  s.tokens = session.tokens;
  s.last_use_ms = options_.now_ms();
  ++s.num_turns;
  // Put keeps the record's pin (CacheStore::Put), so it stays unevictable.
  RETURN_IF_ERROR(options_.client->Put(key, Encode(s)));
  return s;
}

absl::Status SessionStore::Close(absl::string_view id) {
  ASSIGN_OR_RETURN(const SpanKey key, SessionKey(id));
  std::lock_guard<std::mutex> lock(Stripe(key));
  RETURN_IF_ERROR(GetLocked(id, key).status());
  return options_.client->Delete(key);
}

}  // namespace kvspan::prefill
