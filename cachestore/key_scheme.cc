#include "cachestore/key_scheme.h"

// Inlined so XXH3 is compiled with this build's flags (-mavx2): several times the
// throughput of Debian's generic libxxhash build. Same algorithm, same digests.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "absl/strings/str_cat.h"

namespace kvspan::cachestore {
namespace {

// Domain tag: the first bytes of every serialized namespace (docs/key-scheme.md).
constexpr absl::string_view kNamespaceTag = "kvspan.ns.v1";

void AppendU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void AppendField(std::string* out, absl::string_view field) {
  AppendU32(out, static_cast<uint32_t>(field.size()));
  out->append(field.data(), field.size());
}

SpanKey Hash128(const void* data, size_t size) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(data, size));
  SpanKey key;
  static_assert(sizeof(canonical.digest) == SpanKey::kSize);
  std::memcpy(key.bytes.data(), canonical.digest, SpanKey::kSize);
  return key;
}

absl::Status CheckField(absl::string_view name, absl::string_view value, bool allow_empty) {
  if (!allow_empty && value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("namespace: ", name, " is empty"));
  }
  if (value.size() > kMaxFingerprintBytes) {
    return absl::InvalidArgumentError(absl::StrCat("namespace: ", name, " is ", value.size(),
                                                   " bytes, over the limit of ",
                                                   kMaxFingerprintBytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> SerializeNamespace(const Namespace& ns) {
  absl::Status s = CheckField("model_fingerprint", ns.model_fingerprint, false);
  if (s.ok()) s = CheckField("policy_fingerprint", ns.policy_fingerprint, false);
  if (s.ok()) s = CheckField("tenant_salt", ns.tenant_salt, true);
  if (!s.ok()) return s;
  if (ns.span_length == 0 || ns.span_length > kMaxSpanLength) {
    return absl::InvalidArgumentError(absl::StrCat("namespace: span_length ", ns.span_length,
                                                   " is outside [1, ", kMaxSpanLength, "]"));
  }
  std::string out(kNamespaceTag);
  AppendField(&out, ns.model_fingerprint);
  AppendField(&out, ns.policy_fingerprint);
  AppendU32(&out, ns.span_length);
  AppendField(&out, ns.tenant_salt);
  return out;
}

absl::StatusOr<SpanKey> NamespaceKey(const Namespace& ns) {
  absl::StatusOr<std::string> bytes = SerializeNamespace(ns);
  if (!bytes.ok()) return bytes.status();
  return Hash128(bytes->data(), bytes->size());
}

SpanKey NextSpanKey(const SpanKey& previous, absl::Span<const uint32_t> span_tokens) {
  std::string buf;
  buf.reserve(SpanKey::kSize + 4 * span_tokens.size());
  buf.append(previous.AsStringView().data(), SpanKey::kSize);
  for (uint32_t t : span_tokens) AppendU32(&buf, t);  // explicit LE, whatever the host
  return Hash128(buf.data(), buf.size());
}

absl::StatusOr<std::vector<SpanKey>> SpanKeyChain(const Namespace& ns,
                                                  absl::Span<const uint32_t> tokens) {
  absl::StatusOr<SpanKey> key = NamespaceKey(ns);
  if (!key.ok()) return key.status();
  std::vector<SpanKey> chain;
  const size_t num_spans = tokens.size() / ns.span_length;
  chain.reserve(num_spans);
  SpanKey prev = *key;
  for (size_t i = 0; i < num_spans; ++i) {
    prev = NextSpanKey(prev, tokens.subspan(i * ns.span_length, ns.span_length));
    chain.push_back(prev);
  }
  return chain;
}

uint64_t ValueChecksum(absl::string_view payload) {
  return XXH3_64bits(payload.data(), payload.size());
}

}  // namespace kvspan::cachestore
