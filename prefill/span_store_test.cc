// SpanStore over a real RocksDB store in a temp dir (EmbeddedCacheClient) and over a real
// cachestore server on 127.0.0.1 (RemoteCacheClient), for the store-down case.
#include "prefill/span_store.h"

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "cachestore/embedded_client.h"
#include "cachestore/internal/test_server.h"
#include "cachestore/key_scheme.h"
#include "cachestore/remote_client.h"
#include "cachestore/store.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/policy.h"
#include "kvcache/span_format.h"
#include "kvcache/testing/random_span.h"

namespace kvspan::prefill {
namespace {

using ::kvspan::cachestore::CacheClient;
using ::kvspan::cachestore::SpanKey;
using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kModel[] = "test-model@sha256:00";
const kvcache::SpanGeometry kGeometry{2, 2, 16, 8};  // S = 8

kvcache::Policy MustParse(const std::string& text) {
  absl::StatusOr<kvcache::Policy> p = kvcache::ParsePolicy(text);
  CHECK(p.ok()) << p.status();
  return *p;
}

SpanStoreOptions StoreOptions(std::shared_ptr<CacheClient> client, const std::string& policy = "bf16") {
  const kvcache::Policy p = MustParse(policy);
  SpanStoreOptions o;
  o.client = std::move(client);
  o.model_fingerprint = kModel;
  o.policy = p.ToString();
  o.policy_fingerprint = p.fingerprint();
  o.geometry = kGeometry;
  o.num_get_threads = 3;
  return o;
}

// Span i of a prompt, as the model would compress it for `o`'s namespace.
kvcache::Span MakeSpan(const SpanStoreOptions& o, int i, uint64_t seed = 7) {
  kvcache::testing::RandomSpanOptions r;
  r.geometry = o.geometry;
  r.span_index = i;
  r.seed = seed * 1000 + i;
  r.model_fingerprint = o.model_fingerprint;
  r.policy = o.policy;
  absl::StatusOr<kvcache::Span> span = kvcache::testing::RandomSpan(r);
  CHECK(span.ok()) << span.status();
  return *std::move(span);
}

std::vector<int32_t> Tokens(int n, int32_t first = 100) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

// Delegates to a real client, except for the Gets of keys given a fault.
class FaultyClient : public CacheClient {
 public:
  enum class Fault { kUnavailable, kMiss };
  explicit FaultyClient(std::shared_ptr<CacheClient> base) : base_(std::move(base)) {}
  // REQUIRES: not concurrent with any other call.
  void Inject(const SpanKey& key, Fault fault) { faults_[key] = fault; }

  absl::StatusOr<size_t> Lookup(const SpanKey& ns, absl::Span<const SpanKey> chain) override {
    return base_->Lookup(ns, chain);
  }
  absl::StatusOr<std::optional<cachestore::Value>> Get(const SpanKey& key) override {
    auto it = faults_.find(key);
    if (it == faults_.end()) return base_->Get(key);
    if (it->second == Fault::kMiss) return std::optional<cachestore::Value>();
    return absl::UnavailableError("injected");
  }
  absl::Status Put(const SpanKey& key, absl::string_view payload) override { return base_->Put(key, payload); }
  absl::Status Delete(const SpanKey& key) override { return base_->Delete(key); }
  absl::Status Pin(const SpanKey& key) override { return base_->Pin(key); }
  absl::Status Unpin(const SpanKey& key) override { return base_->Unpin(key); }
  absl::StatusOr<cachestore::StoreStats> Stats() override { return base_->Stats(); }

 private:
  std::shared_ptr<CacheClient> base_;
  absl::flat_hash_map<SpanKey, Fault> faults_;
};

class SpanStoreTest : public ::testing::Test {
 protected:
  SpanStoreTest() {
    cachestore::StoreOptions o;
    o.path = dir_.Sub("db");
    absl::StatusOr<std::unique_ptr<cachestore::CacheStore>> store = cachestore::CacheStore::Open(o);
    CHECK(store.ok()) << store.status();
    client_ = std::make_shared<cachestore::EmbeddedCacheClient>(std::shared_ptr<cachestore::CacheStore>(*std::move(store)));
  }

  std::unique_ptr<SpanStore> MakeStore(const SpanStoreOptions& o) {
    absl::StatusOr<std::unique_ptr<SpanStore>> s = SpanStore::Create(o);
    CHECK(s.ok()) << s.status();
    return *std::move(s);
  }
  // Puts spans `indexes` of `tokens` and waits for them.
  void PutSpans(SpanStore& store, const SpanStoreOptions& o, const std::vector<int32_t>& tokens,
                const std::vector<int>& indexes) {
    ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, store.KeyChain(tokens));
    for (int i : indexes) store.PutAsync(keys[i], MakeSpan(o, i));
    store.Flush();
  }
  size_t Present(SpanStore& store, const std::vector<int32_t>& tokens) {
    absl::StatusOr<std::vector<SpanKey>> keys = store.KeyChain(tokens);
    CHECK(keys.ok());
    absl::StatusOr<size_t> n = client_->Lookup(store.namespace_key(), *keys);
    CHECK(n.ok()) << n.status();
    return *n;
  }

  kvspan::testing::TempDir dir_;
  std::shared_ptr<CacheClient> client_;
};

TEST_F(SpanStoreTest, RoundTripLoadsEqualSpans) {
  const SpanStoreOptions o = StoreOptions(client_);
  std::unique_ptr<SpanStore> store = MakeStore(o);
  const std::vector<int32_t> tokens = Tokens(3 * 8 + 5);  // 3 full spans and 5 tokens
  PutSpans(*store, o, tokens, {0, 1, 2});

  LoadedPrefix loaded = store->LoadPrefix(tokens, 100);
  ASSERT_EQ(loaded.spans.size(), 3u);
  EXPECT_EQ(loaded.keys.size(), 3u);
  int64_t bytes = 0;
  for (int i = 0; i < 3; ++i) {
    const kvcache::Span want = MakeSpan(o, i);
    EXPECT_EQ(loaded.spans[i], want) << i;
    EXPECT_EQ(kvcache::SerializeSpan(loaded.spans[i]), kvcache::SerializeSpan(want)) << i;
    bytes += kvcache::SerializedSize(want);
  }
  EXPECT_EQ(loaded.num_spans_looked_up, 3);
  EXPECT_EQ(loaded.num_spans_hit, 3);
  EXPECT_EQ(loaded.num_spans_loaded, 3);
  EXPECT_EQ(loaded.bytes_loaded, bytes);
  EXPECT_EQ(loaded.num_store_errors + loaded.num_misses + loaded.num_bad_spans, 0);
  EXPECT_GE(loaded.seconds, 0.0);

  const SpanStoreStats s = store->stats();
  EXPECT_EQ(s.num_puts_ok, 3);
  EXPECT_EQ(s.bytes_put, bytes);
  EXPECT_EQ(s.num_lookups, 1);
  EXPECT_EQ(s.num_spans_loaded, 3);
  EXPECT_EQ(s.bytes_loaded, bytes);
  EXPECT_EQ(s.num_puts_failed + s.num_puts_refused + s.num_puts_dropped, 0);
}

TEST_F(SpanStoreTest, PartialPrefixStopsAtTheFirstAbsentSpan) {
  const SpanStoreOptions o = StoreOptions(client_);
  std::unique_ptr<SpanStore> store = MakeStore(o);
  const std::vector<int32_t> tokens = Tokens(4 * 8);
  PutSpans(*store, o, tokens, {0, 1, 3});

  LoadedPrefix loaded = store->LoadPrefix(tokens, 100);
  EXPECT_EQ(loaded.num_spans_looked_up, 4);
  EXPECT_EQ(loaded.num_spans_hit, 2);
  ASSERT_EQ(loaded.spans.size(), 2u);
  EXPECT_EQ(loaded.spans[1], MakeSpan(o, 1));
  EXPECT_EQ(loaded.num_misses, 0);  // an absent span after the run is not a miss

  loaded = store->LoadPrefix(tokens, 1);
  EXPECT_EQ(loaded.num_spans_looked_up, 1);
  EXPECT_EQ(loaded.spans.size(), 1u);
  loaded = store->LoadPrefix(tokens, 0);
  EXPECT_EQ(loaded.num_spans_looked_up, 0);
  EXPECT_TRUE(loaded.spans.empty());
  EXPECT_EQ(loaded.keys.size(), 4u);

  // A prompt that diverges inside span 1 shares span 0 only.
  std::vector<int32_t> other = tokens;
  other[12] = 7;
  EXPECT_EQ(store->LoadPrefix(other, 100).spans.size(), 1u);
  EXPECT_EQ(store->stats().num_lookups, 3);  // max_spans 0 sends no Lookup
}

TEST_F(SpanStoreTest, OtherNamespacesMiss) {
  const SpanStoreOptions o = StoreOptions(client_);
  std::unique_ptr<SpanStore> store = MakeStore(o);
  const std::vector<int32_t> tokens = Tokens(4 * 8);
  PutSpans(*store, o, tokens, {0, 1, 2, 3});
  ASSERT_EQ(store->LoadPrefix(tokens, 100).spans.size(), 4u);

  std::vector<SpanStoreOptions> others(4, o);
  others[0] = StoreOptions(client_, "int8(g=32)");
  others[1].model_fingerprint = "other-model";
  others[2].tenant_salt = "tenant-b";
  others[3].geometry.span_tokens = 4;
  for (size_t i = 0; i < others.size(); ++i) {
    std::unique_ptr<SpanStore> other = MakeStore(others[i]);
    EXPECT_NE(other->namespace_key(), store->namespace_key()) << i;
    LoadedPrefix loaded = other->LoadPrefix(tokens, 100);
    EXPECT_GT(loaded.num_spans_looked_up, 0) << i;
    EXPECT_EQ(loaded.num_spans_hit, 0) << i;
    EXPECT_TRUE(loaded.spans.empty()) << i;
  }
}

TEST_F(SpanStoreTest, KeysFollowTheKeyScheme) {
  SpanStoreOptions o = StoreOptions(client_);
  o.tenant_salt = "salt";
  std::unique_ptr<SpanStore> store = MakeStore(o);
  cachestore::Namespace ns;
  ns.model_fingerprint = kModel;
  ns.policy_fingerprint = absl::StrFormat("%016x", MustParse("bf16").fingerprint());
  ns.span_length = 8;
  ns.tenant_salt = "salt";
  EXPECT_EQ(ns.policy_fingerprint, "6916919e3899e7ec");  // kvcache/policy_test.cc's golden
  ASSERT_OK_AND_ASSIGN(SpanKey ns_key, cachestore::NamespaceKey(ns));
  EXPECT_EQ(store->namespace_key(), ns_key);

  const std::vector<int32_t> tokens = Tokens(2 * 8 + 7);
  std::vector<uint32_t> u32(tokens.begin(), tokens.end());
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> want, cachestore::SpanKeyChain(ns, u32));
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, store->KeyChain(tokens));
  EXPECT_EQ(keys, want);
  EXPECT_EQ(keys.size(), 2u);

  std::vector<int32_t> bad = tokens;
  bad[3] = -1;
  EXPECT_THAT(store->KeyChain(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  LoadedPrefix loaded = store->LoadPrefix(bad, 100);
  EXPECT_TRUE(loaded.spans.empty());
  EXPECT_TRUE(loaded.keys.empty());
}

TEST_F(SpanStoreTest, CreateRejectsBadOptions) {
  const SpanStoreOptions good = StoreOptions(client_);
  std::vector<std::pair<SpanStoreOptions, std::string>> cases;
  auto add = [&](auto edit, std::string what) {
    SpanStoreOptions o = good;
    edit(o);
    cases.emplace_back(o, what);
  };
  add([](SpanStoreOptions& o) { o.client = nullptr; }, "client");
  add([](SpanStoreOptions& o) { o.model_fingerprint = ""; }, "model_fingerprint");
  add([](SpanStoreOptions& o) { o.model_fingerprint = std::string(2000, 'm'); }, "model_fingerprint");
  add([](SpanStoreOptions& o) { o.tenant_salt = std::string(2000, 's'); }, "tenant_salt");
  add([](SpanStoreOptions& o) { o.policy = "nope"; }, "policy");
  add([](SpanStoreOptions& o) { o.policy = "int4"; }, "canonical");
  add([](SpanStoreOptions& o) { o.policy_fingerprint ^= 1; }, "policy_fingerprint");
  add([](SpanStoreOptions& o) { o.geometry.span_tokens = 0; }, "span_tokens");
  add([](SpanStoreOptions& o) { o.num_get_threads = 0; }, "num_get_threads");
  add([](SpanStoreOptions& o) { o.max_pending_puts = 0; }, "max_pending_puts");
  for (const auto& [o, what] : cases) {
    EXPECT_THAT(SpanStore::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(what)));
  }
}

// A value under a key of the chain that the store accepts (valid store checksum) but that
// is not span 1 of this namespace.
enum class BadValue { kGarbage, kTruncated, kWrongPosition, kWrongModel, kWrongPolicy, kWrongGeometry };

class BadSpanTest : public SpanStoreTest, public ::testing::WithParamInterface<BadValue> {};

TEST_P(BadSpanTest, EndsTheRunAndIsDeleted) {
  const SpanStoreOptions o = StoreOptions(client_);
  std::unique_ptr<SpanStore> store = MakeStore(o);
  const std::vector<int32_t> tokens = Tokens(4 * 8);
  PutSpans(*store, o, tokens, {0, 1, 2, 3});
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, store->KeyChain(tokens));

  std::string bad;
  SpanStoreOptions other = o;
  switch (GetParam()) {
    case BadValue::kGarbage: bad = "not a span at all"; break;
    case BadValue::kTruncated: bad = kvcache::SerializeSpan(MakeSpan(o, 1)).substr(0, 100); break;
    case BadValue::kWrongPosition: bad = kvcache::SerializeSpan(MakeSpan(o, 2)); break;
    case BadValue::kWrongModel: other.model_fingerprint = "other"; break;
    case BadValue::kWrongPolicy: other.policy = "int8(g=32)"; break;
    case BadValue::kWrongGeometry: other.geometry.head_dim = 8; break;
  }
  if (bad.empty()) bad = kvcache::SerializeSpan(MakeSpan(other, 1));
  ASSERT_OK(client_->Put(keys[1], bad));

  LoadedPrefix loaded = store->LoadPrefix(tokens, 100);
  EXPECT_EQ(loaded.num_spans_hit, 4);
  ASSERT_EQ(loaded.spans.size(), 1u);
  EXPECT_EQ(loaded.spans[0], MakeSpan(o, 0));
  EXPECT_EQ(loaded.num_bad_spans, 1);
  EXPECT_EQ(loaded.num_store_errors, 0);
  EXPECT_EQ(Present(*store, tokens), 1u);  // the bad span is gone, span 0 stays
  SpanStoreStats s = store->stats();
  EXPECT_EQ(s.num_bad_spans, 1);
  EXPECT_EQ(s.num_bad_spans_deleted, 1);

  // Recomputed span 1 is written again: the whole prefix loads.
  store->PutAsync(keys[1], MakeSpan(o, 1));
  store->Flush();
  EXPECT_EQ(store->LoadPrefix(tokens, 100).spans.size(), 4u);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, BadSpanTest,
                         ::testing::Values(BadValue::kGarbage, BadValue::kTruncated,
                                           BadValue::kWrongPosition, BadValue::kWrongModel,
                                           BadValue::kWrongPolicy, BadValue::kWrongGeometry));

TEST_F(SpanStoreTest, GetErrorsAndMissesEndTheRunAndAreCounted) {
  auto faulty = std::make_shared<FaultyClient>(client_);
  const SpanStoreOptions o = StoreOptions(faulty);
  std::unique_ptr<SpanStore> store = MakeStore(o);
  const std::vector<int32_t> tokens = Tokens(4 * 8);
  PutSpans(*store, o, tokens, {0, 1, 2, 3});
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, store->KeyChain(tokens));

  faulty->Inject(keys[3], FaultyClient::Fault::kUnavailable);
  LoadedPrefix loaded = store->LoadPrefix(tokens, 100);
  EXPECT_EQ(loaded.spans.size(), 3u);
  EXPECT_EQ(loaded.num_store_errors, 1);
  EXPECT_EQ(loaded.num_get_errors, 1);
  EXPECT_EQ(loaded.num_misses, 0);

  faulty->Inject(keys[1], FaultyClient::Fault::kMiss);
  loaded = store->LoadPrefix(tokens, 100);
  EXPECT_EQ(loaded.spans.size(), 1u);
  EXPECT_EQ(loaded.num_misses, 1);
  EXPECT_EQ(loaded.num_store_errors, 1);  // span 3's Get still fails; counted too

  const SpanStoreStats s = store->stats();
  EXPECT_EQ(s.num_store_errors, 2);
  EXPECT_EQ(s.num_get_errors, 2);
  EXPECT_EQ(s.num_misses, 1);
  EXPECT_EQ(s.num_spans_loaded, 4);
  EXPECT_EQ(Present(*store, tokens), 4u);  // nothing was deleted
}

TEST_F(SpanStoreTest, StoreDownIsAnEmptyPrefix) {
  auto server = std::make_unique<cachestore::testing::TestServer>();
  cachestore::RemoteClientOptions ro;
  ro.target = server->address();
  ro.timeout_ms = 5000;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<CacheClient> remote, cachestore::RemoteCacheClient::Create(ro));
  const SpanStoreOptions o = StoreOptions(remote);
  std::unique_ptr<SpanStore> store = MakeStore(o);
  const std::vector<int32_t> tokens = Tokens(3 * 8);
  PutSpans(*store, o, tokens, {0, 1, 2});
  ASSERT_EQ(store->LoadPrefix(tokens, 100).spans.size(), 3u);

  server.reset();  // shuts the server down
  LoadedPrefix loaded = store->LoadPrefix(tokens, 100);
  EXPECT_TRUE(loaded.spans.empty());
  EXPECT_EQ(loaded.num_spans_hit, 0);
  EXPECT_EQ(loaded.num_store_errors, 1);
  EXPECT_EQ(loaded.num_get_errors, 0);  // the Lookup failed: no span was hit
  EXPECT_EQ(loaded.keys.size(), 3u);

  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, store->KeyChain(tokens));
  store->PutAsync(keys[0], MakeSpan(o, 0));
  store->Flush();
  const SpanStoreStats s = store->stats();
  EXPECT_EQ(s.num_store_errors, 1);
  EXPECT_EQ(s.num_puts_ok, 3);
  EXPECT_EQ(s.num_puts_failed, 1);
}

TEST_F(SpanStoreTest, QueryAwareAndForeignSpansAreRefused) {
  const SpanStoreOptions snap = StoreOptions(client_, "snapkv/bf16");
  std::unique_ptr<SpanStore> store = MakeStore(snap);
  const std::vector<int32_t> tokens = Tokens(2 * 8);
  PutSpans(*store, snap, tokens, {0, 1});
  EXPECT_EQ(store->stats().num_puts_refused, 2);
  EXPECT_EQ(store->stats().num_puts_ok, 0);
  EXPECT_EQ(Present(*store, tokens), 0u);

  const SpanStoreOptions o = StoreOptions(client_);
  std::unique_ptr<SpanStore> plain = MakeStore(o);
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, plain->KeyChain(tokens));
  plain->PutAsync(keys[0], MakeSpan(snap, 0));  // a snapkv span offered to a bf16 store
  SpanStoreOptions other_model = o;
  other_model.model_fingerprint = "other";
  plain->PutAsync(keys[0], MakeSpan(other_model, 0));
  kvcache::Span moved = MakeSpan(o, 1);
  moved.header.first_position = 3;  // span_index 1 must start at 8
  plain->PutAsync(keys[1], moved);
  plain->Flush();
  EXPECT_EQ(plain->stats().num_puts_refused, 3);
  EXPECT_EQ(Present(*plain, tokens), 0u);
}

TEST_F(SpanStoreTest, DestructorFlushesQueuedPuts) {
  const SpanStoreOptions o = StoreOptions(client_);
  const std::vector<int32_t> tokens = Tokens(6 * 8);
  {
    std::unique_ptr<SpanStore> store = MakeStore(o);
    ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> keys, store->KeyChain(tokens));
    for (int i = 0; i < 6; ++i) store->PutAsync(keys[i], MakeSpan(o, i));
  }
  std::unique_ptr<SpanStore> store = MakeStore(o);
  EXPECT_EQ(store->LoadPrefix(tokens, 100).spans.size(), 6u);
}

TEST_F(SpanStoreTest, ConcurrentLoadsAndPuts) {
  SpanStoreOptions o = StoreOptions(client_);
  o.num_put_threads = 2;
  std::unique_ptr<SpanStore> store = MakeStore(o);
  constexpr int kThreads = 4, kSpans = 5;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<int32_t> tokens = Tokens(kSpans * 8, 1000 * t);
      for (int round = 0; round < 3; ++round) {
        LoadedPrefix loaded = store->LoadPrefix(tokens, kSpans);
        for (int i = loaded.num_spans_loaded; i < kSpans; ++i) {
          store->PutAsync(loaded.keys[i], MakeSpan(o, i));
        }
        store->Flush();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(store->LoadPrefix(Tokens(kSpans * 8, 1000 * t), kSpans).spans.size(), size_t{kSpans}) << t;
  }
  const SpanStoreStats s = store->stats();
  EXPECT_EQ(s.num_puts_ok, kThreads * kSpans);  // each thread's second round loads everything
  EXPECT_EQ(s.num_bad_spans + s.num_store_errors + s.num_misses + s.num_puts_failed, 0);
}

}  // namespace
}  // namespace kvspan::prefill
