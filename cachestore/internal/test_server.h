// Test-only: a CacheStore in a temp dir served by a CacheServer on 127.0.0.1:0.
#ifndef KVSPAN_CACHESTORE_INTERNAL_TEST_SERVER_H_
#define KVSPAN_CACHESTORE_INTERNAL_TEST_SERVER_H_

#include <memory>
#include <string>

#include "cachestore/internal/test_util.h"
#include "cachestore/server.h"
#include "cachestore/store.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore::testing {

class TestServer {
 public:
  explicit TestServer(StoreOptions store_options = {}, ServerOptions server_options = {}) {
    store_options.path = dir_.Sub("db");
    absl::StatusOr<std::unique_ptr<CacheStore>> store = CacheStore::Open(store_options);
    EXPECT_TRUE(store.ok()) << store.status();
    store_ = std::shared_ptr<CacheStore>(std::move(*store));
    server_options.listen_address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<CacheServer>> server = CacheServer::Start(store_, server_options);
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  ~TestServer() { server_.reset(); }

  std::string address() const { return server_->address(); }
  CacheStore& store() { return *store_; }
  CacheServer& server() { return *server_; }

 private:
  TempDir dir_;
  std::shared_ptr<CacheStore> store_;
  std::unique_ptr<CacheServer> server_;
};

}  // namespace kvspan::cachestore::testing

#endif  // KVSPAN_CACHESTORE_INTERNAL_TEST_SERVER_H_
