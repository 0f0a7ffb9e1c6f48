// ShardedCacheClient over three real servers on 127.0.0.1.
#include "cachestore/sharded_client.h"

#include <numeric>
#include <vector>

#include "cachestore/internal/test_server.h"
#include "cachestore/key_scheme.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore {
namespace {

using ::kvspan::cachestore::testing::Payload;
using ::kvspan::cachestore::testing::TestKey;
using ::kvspan::cachestore::testing::TestServer;
using ::kvspan::testing::StatusIs;

constexpr int kNumSpans = 30;

class ShardedClientTest : public ::testing::Test {
 protected:
  ShardedClientTest() {
    for (int i = 0; i < 3; ++i) servers_.push_back(std::make_unique<TestServer>());
    for (auto& s : servers_) targets_.push_back(s->address());
    RemoteClientOptions o;
    o.timeout_ms = 10000;
    client_ = *ShardedCacheClient::CreateRemote(targets_, o);
    Namespace ns{"model", "policy", 4, ""};
    ns_key_ = *NamespaceKey(ns);
    std::vector<uint32_t> tokens(4 * kNumSpans);
    std::iota(tokens.begin(), tokens.end(), 7);
    chain_ = *SpanKeyChain(ns, tokens);
  }

  std::vector<std::unique_ptr<TestServer>> servers_;
  std::vector<std::string> targets_;
  std::unique_ptr<ShardedCacheClient> client_;
  SpanKey ns_key_;
  std::vector<SpanKey> chain_;
};

TEST_F(ShardedClientTest, EachSpanLivesOnItsRendezvousOwner) {
  for (int i = 0; i < kNumSpans; ++i) ASSERT_OK(client_->Put(chain_[i], Payload(i, 2000)));
  std::vector<int> per_shard(3, 0);
  for (int i = 0; i < kNumSpans; ++i) {
    const size_t owner = client_->ShardFor(chain_[i]);
    ++per_shard[owner];
    for (size_t s = 0; s < 3; ++s) {
      ASSERT_OK_AND_ASSIGN(size_t n, servers_[s]->store().Lookup(ns_key_, absl::MakeConstSpan(&chain_[i], 1)));
      EXPECT_EQ(n, s == owner ? 1u : 0u) << "span " << i << " shard " << s;
    }
    ASSERT_OK_AND_ASSIGN(std::optional<Value> v, client_->Get(chain_[i]));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(**v, Payload(i, 2000));
  }
  for (int count : per_shard) EXPECT_GT(count, 0);
  ASSERT_OK_AND_ASSIGN(StoreStats total, client_->Stats());
  EXPECT_EQ(total.disk_entries, kNumSpans);
}

TEST_F(ShardedClientTest, LookupCombinesShardsIntoTheLeadingRun) {
  for (int i = 0; i < kNumSpans; ++i) ASSERT_OK(client_->Put(chain_[i], Payload(i, 500)));
  ASSERT_OK_AND_ASSIGN(size_t n, client_->Lookup(ns_key_, chain_));
  EXPECT_EQ(n, static_cast<size_t>(kNumSpans));
  ASSERT_OK(client_->Delete(chain_[17]));
  ASSERT_OK_AND_ASSIGN(n, client_->Lookup(ns_key_, chain_));
  EXPECT_EQ(n, 17u);
  // Remove a span directly on its owner's store: same answer as one big store.
  ASSERT_OK(servers_[client_->ShardFor(chain_[5])]->store().Delete(chain_[5]));
  ASSERT_OK_AND_ASSIGN(n, client_->Lookup(ns_key_, chain_));
  EXPECT_EQ(n, 5u);
  EXPECT_THAT(client_->Lookup(SpanKey(), chain_), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ShardedClientTest, PinGoesToTheOwner) {
  ASSERT_OK(client_->Put(chain_[0], Payload(0, 100)));
  ASSERT_OK(client_->Pin(chain_[0]));
  EXPECT_EQ(servers_[client_->ShardFor(chain_[0])]->store().Stats().pinned_entries, 1);
  ASSERT_OK(client_->Unpin(chain_[0]));
  EXPECT_THAT(client_->Pin(chain_[1]), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ShardedClientTest, ADownShardMakesLookupUnavailable) {
  for (int i = 0; i < kNumSpans; ++i) ASSERT_OK(client_->Put(chain_[i], Payload(i, 100)));
  servers_[1]->server().Shutdown(0);
  EXPECT_THAT(client_->Lookup(ns_key_, chain_), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(RendezvousTest, RemovingAShardMovesOnlyItsKeys) {
  auto make = [](std::vector<std::string> names) {
    std::vector<CacheShard> shards;
    for (const auto& name : names) {
      RemoteClientOptions o;
      o.target = name;  // never dialled: channels connect lazily
      shards.push_back(CacheShard{name, *RemoteCacheClient::Create(o)});
    }
    return *ShardedCacheClient::Create(std::move(shards));
  };
  auto three = make({"a:1", "b:1", "c:1"});
  auto two = make({"a:1", "b:1"});
  int moved = 0;
  for (uint32_t i = 0; i < 300; ++i) {
    const size_t owner3 = three->ShardFor(TestKey(i));
    const size_t owner2 = two->ShardFor(TestKey(i));
    if (owner3 != 2) {
      EXPECT_EQ(owner3, owner2) << i;  // keys of a and b stay put
    } else {
      ++moved;
    }
  }
  EXPECT_GT(moved, 50);  // about a third
  EXPECT_LT(moved, 150);
}

TEST(ShardedCreateTest, RejectsBadShardLists) {
  EXPECT_THAT(ShardedCacheClient::Create({}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ShardedCacheClient::CreateRemote({"x:1", "x:1"}, RemoteClientOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<CacheShard> null_client;
  null_client.push_back(CacheShard{"x:1", nullptr});
  EXPECT_THAT(ShardedCacheClient::Create(std::move(null_client)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::cachestore
