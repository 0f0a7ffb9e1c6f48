// The concurrency load of concurrency_test.cc through a gRPC server on 127.0.0.1.
#include "cachestore/internal/hammer.h"
#include "cachestore/internal/test_server.h"
#include "cachestore/remote_client.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore {
namespace {

using ::kvspan::cachestore::testing::Hammer;
using ::kvspan::cachestore::testing::TestServer;

TEST(ConcurrencyTest, RemoteClientsUnderContention) {
  StoreOptions o;
  o.memory_budget_bytes = 4 * 5000;
  TestServer server(o);
  RemoteClientOptions ro;
  ro.target = server.address();
  auto client = *RemoteCacheClient::Create(ro);
  EXPECT_EQ(Hammer(*client, 4, 100), 0);
  EXPECT_EQ(server.store().Stats().checksum_failures, 0);
}

}  // namespace
}  // namespace kvspan::cachestore
