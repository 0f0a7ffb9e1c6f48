// SessionStore over a real RocksDB store in a temp dir, with a fake clock.
#include "prefill/session_store.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "cachestore/embedded_client.h"
#include "cachestore/key_scheme.h"
#include "cachestore/store.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvspan/v1/session.pb.h"

namespace kvspan::prefill {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kPolicy[] = "sinks(n=4)+window(n=16)/int4(g=32)";
constexpr char kUnknownId[] = "000102030405060708090a0b0c0d0e0f";

class SessionStoreTest : public ::testing::Test {
 protected:
  SessionStoreTest() { OpenAll(cachestore::StoreOptions()); }

  // (Re)opens the RocksDB store in dir_ and a SessionStore over it.
  void OpenAll(cachestore::StoreOptions o) {
    sessions_.reset();
    client_.reset();
    store_.reset();  // closes the database before it is opened again
    o.path = dir_.Sub("db");
    absl::StatusOr<std::unique_ptr<cachestore::CacheStore>> store = cachestore::CacheStore::Open(o);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    client_ = std::make_shared<cachestore::EmbeddedCacheClient>(store_);
    SessionStoreOptions so;
    so.client = client_;
    so.now_ms = [this] { return now_ms_; };
    absl::StatusOr<std::unique_ptr<SessionStore>> sessions = SessionStore::Create(so);
    ASSERT_TRUE(sessions.ok()) << sessions.status();
    sessions_ = *std::move(sessions);
  }

  kvspan::testing::TempDir dir_;
  int64_t now_ms_ = 1'700'000'000'000;
  std::shared_ptr<cachestore::CacheStore> store_;
  std::shared_ptr<cachestore::CacheClient> client_;
  std::unique_ptr<SessionStore> sessions_;
};

TEST(SessionKeyTest, GoldenValue) {
  // docs/key-scheme.md, "Session keys"; cross-checked with xxhsum -H2.
  ASSERT_OK_AND_ASSIGN(cachestore::SpanKey key, SessionKey(kUnknownId));
  EXPECT_EQ(key.ToHex(), "fd8ed0509e4a89800fb164195b5e1038");
  for (const char* bad : {"", "00010203", "000102030405060708090A0B0C0D0E0F",
                          "000102030405060708090a0b0c0d0e0g", "000102030405060708090a0b0c0d0e0f0"}) {
    EXPECT_THAT(SessionKey(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed")));
  }
}

TEST_F(SessionStoreTest, OpenGetUpdateCloseRoundTrip) {
  ASSERT_OK_AND_ASSIGN(Session s, sessions_->Open("sinks(4)+window(16)/int4", 64, 60'000));
  EXPECT_EQ(s.id.size(), kSessionIdHexDigits);
  EXPECT_EQ(s.policy, kPolicy);  // canonical form
  EXPECT_EQ(s.span_tokens, 64);
  EXPECT_EQ(s.created_ms, now_ms_);
  EXPECT_EQ(s.last_use_ms, now_ms_);
  EXPECT_EQ(s.idle_timeout_ms, 60'000);
  EXPECT_EQ(s.num_turns, 0);
  EXPECT_TRUE(s.tokens.empty());
  ASSERT_OK_AND_ASSIGN(Session got, sessions_->Get(s.id));
  EXPECT_EQ(got, s);
  ASSERT_OK_AND_ASSIGN(cachestore::StoreStats stats, client_->Stats());
  EXPECT_EQ(stats.pinned_entries, 1);

  now_ms_ += 5000;
  got.tokens = {1, 2, 3, 4, 5};
  ASSERT_OK_AND_ASSIGN(Session updated, sessions_->Update(got));
  EXPECT_EQ(updated.tokens, got.tokens);
  EXPECT_EQ(updated.last_use_ms, now_ms_);
  EXPECT_EQ(updated.created_ms, s.created_ms);
  EXPECT_EQ(updated.num_turns, 1);
  updated.tokens.insert(updated.tokens.end(), {6, 7});
  ASSERT_OK_AND_ASSIGN(updated, sessions_->Update(updated));
  ASSERT_OK_AND_ASSIGN(got, sessions_->Get(s.id));
  EXPECT_EQ(got, updated);
  EXPECT_EQ(got.tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(got.num_turns, 2);

  ASSERT_OK(sessions_->Close(s.id));
  EXPECT_THAT(sessions_->Get(s.id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("not found")));
  ASSERT_OK_AND_ASSIGN(stats, client_->Stats());
  EXPECT_EQ(stats.pinned_entries, 0);
  EXPECT_EQ(stats.disk_entries, 0);
}

TEST_F(SessionStoreTest, IdleSessionExpiresAndIsDeleted) {
  ASSERT_OK_AND_ASSIGN(Session s, sessions_->Open(kPolicy, 64, 1000));
  ASSERT_OK_AND_ASSIGN(Session forever, sessions_->Open(kPolicy, 64, 0));
  now_ms_ += 1000;  // idle exactly the timeout: still alive
  ASSERT_OK_AND_ASSIGN(Session got, sessions_->Get(s.id));
  ASSERT_OK_AND_ASSIGN(got, sessions_->Update(got));  // a turn resets the idle time
  now_ms_ += 1000;
  ASSERT_OK(sessions_->Get(s.id).status());
  now_ms_ += 1;
  EXPECT_THAT(sessions_->Get(s.id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("session " + s.id + " expired")));
  EXPECT_THAT(sessions_->Get(s.id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("not found")));

  now_ms_ += int64_t{1} << 40;  // timeout 0 never expires
  ASSERT_OK_AND_ASSIGN(got, sessions_->Get(forever.id));
  EXPECT_EQ(got, forever);

  // Update and Close see an expired session as absent too.
  ASSERT_OK_AND_ASSIGN(Session a, sessions_->Open(kPolicy, 64, 10));
  ASSERT_OK_AND_ASSIGN(Session b, sessions_->Open(kPolicy, 64, 10));
  now_ms_ += 11;
  EXPECT_THAT(sessions_->Update(a), StatusIs(absl::StatusCode::kNotFound, HasSubstr("expired")));
  EXPECT_THAT(sessions_->Close(b.id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("expired")));
  ASSERT_OK_AND_ASSIGN(cachestore::StoreStats stats, client_->Stats());
  EXPECT_EQ(stats.disk_entries, 1);  // `forever` only
}

TEST_F(SessionStoreTest, UnknownAndMalformedIds) {
  const std::string not_found = std::string("session ") + kUnknownId + " not found";
  EXPECT_THAT(sessions_->Get(kUnknownId), StatusIs(absl::StatusCode::kNotFound, not_found));
  EXPECT_THAT(sessions_->Close(kUnknownId), StatusIs(absl::StatusCode::kNotFound, not_found));
  Session unknown;
  unknown.id = kUnknownId;
  EXPECT_THAT(sessions_->Update(unknown), StatusIs(absl::StatusCode::kNotFound, not_found));

  for (const char* bad : {"", "nope", "000102030405060708090A0B0C0D0E0F"}) {
    EXPECT_THAT(sessions_->Get(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(sessions_->Close(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    unknown.id = bad;
    EXPECT_THAT(sessions_->Update(unknown), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST_F(SessionStoreTest, OpenRejectsBadArgumentsAndMakesDistinctIds) {
  EXPECT_THAT(sessions_->Open("nope", 64, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(sessions_->Open(kPolicy, 0, 0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_tokens")));
  EXPECT_THAT(sessions_->Open(kPolicy, 64, -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("idle_timeout_ms")));
  EXPECT_THAT(SessionStore::Create(SessionStoreOptions()), StatusIs(absl::StatusCode::kInvalidArgument));
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK_AND_ASSIGN(Session s, sessions_->Open(kPolicy, 64, 0));
    ASSERT_OK(SessionKey(s.id).status());  // 32 lowercase hex digits
    ids.insert(s.id);
  }
  EXPECT_EQ(ids.size(), 50u);
}

TEST_F(SessionStoreTest, StaleUpdateIsAborted) {
  ASSERT_OK_AND_ASSIGN(Session s, sessions_->Open(kPolicy, 64, 0));
  Session first = s, second = s;
  first.tokens = {1, 2};
  second.tokens = {3, 4};
  ASSERT_OK(sessions_->Update(first).status());
  EXPECT_THAT(sessions_->Update(second), StatusIs(absl::StatusCode::kAborted, HasSubstr("turn 1")));
  ASSERT_OK_AND_ASSIGN(Session got, sessions_->Get(s.id));
  EXPECT_EQ(got.tokens, first.tokens);
}

TEST_F(SessionStoreTest, UnparsableOrForeignRecordIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(cachestore::SpanKey key, SessionKey(kUnknownId));
  ASSERT_OK(client_->Put(key, "\xff\xff\xff\xff"));
  EXPECT_THAT(sessions_->Get(kUnknownId), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("does not parse")));

  kvspan::v1::SessionRecord other;  // a well-formed record of another session
  other.set_session_id("ffffffffffffffffffffffffffffffff");
  other.set_policy(kPolicy);
  other.set_span_tokens(64);
  ASSERT_OK(client_->Put(key, other.SerializeAsString()));
  EXPECT_THAT(sessions_->Get(kUnknownId), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("malformed")));
}

TEST_F(SessionStoreTest, SessionSurvivesReopeningTheStore) {
  ASSERT_OK_AND_ASSIGN(Session s, sessions_->Open(kPolicy, 64, 0));
  s.tokens = {10, 20, 30};
  ASSERT_OK_AND_ASSIGN(s, sessions_->Update(s));
  OpenAll(cachestore::StoreOptions());
  ASSERT_OK_AND_ASSIGN(Session got, sessions_->Get(s.id));
  EXPECT_EQ(got, s);
  ASSERT_OK_AND_ASSIGN(cachestore::StoreStats stats, client_->Stats());
  EXPECT_EQ(stats.pinned_entries, 1);
}

TEST_F(SessionStoreTest, PinnedRecordSurvivesFillingTheStore) {
  cachestore::StoreOptions o;
  o.memory_budget_bytes = 64 << 10;
  o.disk_budget_bytes = 256 << 10;
  OpenAll(o);
  ASSERT_OK_AND_ASSIGN(Session s, sessions_->Open(kPolicy, 64, 0));
  s.tokens.assign(2000, 7);
  ASSERT_OK_AND_ASSIGN(s, sessions_->Update(s));
  const std::string filler(4096, 'x');
  for (uint32_t i = 0; i < 200; ++i) {  // 800 KiB of unpinned values
    cachestore::SpanKey key;
    key.bytes[0] = 0xAB;
    key.bytes[15] = static_cast<uint8_t>(i);
    key.bytes[14] = static_cast<uint8_t>(i >> 8);
    ASSERT_OK(client_->Put(key, filler));
  }
  ASSERT_OK_AND_ASSIGN(cachestore::StoreStats stats, client_->Stats());
  EXPECT_GT(stats.memory_evictions, 0);
  EXPECT_GT(stats.disk_evictions, 0);
  EXPECT_EQ(stats.pinned_entries, 1);
  ASSERT_OK_AND_ASSIGN(Session got, sessions_->Get(s.id));
  EXPECT_EQ(got, s);
}

}  // namespace
}  // namespace kvspan::prefill
