// `kvspan serve --store ADDR` over a `kvspan cachestore` process: prefixes hit through the
// remote store, a corrupt span in the store is recomputed (never served) and deleted, and a
// store that dies costs only recomputation — every request still succeeds with the same
// output.
#include <signal.h>

#include <string>
#include <vector>

#include "cachestore/remote_client.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gtest/gtest.h"
#include "kvcache/policy.h"
#include "prefill/span_store.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

const std::string kBinary = KVSPAN_COMMAND;
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";
constexpr int kSpan = 64;

TEST(ServeStoreTest, CorruptSpanIsRecomputedAndDeletedAndADeadStoreFailsNoRequest) {
  kvspan::testing::TempDir dir;
  std::unique_ptr<ServeProcess> store = ServeProcess::Cachestore(kBinary, dir.Sub("store"));
  ASSERT_FALSE(store->address().empty()) << "kvspan cachestore did not come up";
  ServeProcess serve(kBinary, {"--model", kModel, "--store", store->address(), "--threads", "2"});
  ASSERT_FALSE(serve.address().empty()) << "kvspan serve did not come up";
  auto stub = serve.NewStub();

  const std::string policy = "int4(g=32)";
  const std::vector<int32_t> prompt = PromptIds(3, 5 * kSpan + 7);
  const v1::GenerateRequest request = GreedyRequest(prompt, 16, policy, "");
  GenerateOutcome cold = RunGenerate(*stub, request);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  ASSERT_GE(WaitForStorePuts(*stub, 5), 5);
  GenerateOutcome warm = RunGenerate(*stub, request);
  ASSERT_TRUE(warm.status.ok());
  EXPECT_EQ(warm.started.store_prompt_tokens(), 5 * kSpan);
  EXPECT_EQ(warm.ids, cold.ids);

  // Overwrite span 2 with bytes that pass the store's checksum but are no span.
  const v1::ServerInfoResponse info = ServerInfo(*stub);
  ASSERT_OK_AND_ASSIGN(kvcache::Policy parsed, kvcache::ParsePolicy(policy));
  cachestore::RemoteClientOptions ro;
  ro.target = store->address();
  ASSERT_OK_AND_ASSIGN(auto remote, cachestore::RemoteCacheClient::Create(ro));
  prefill::SpanStoreOptions so;
  so.client = std::move(remote);
  so.model_fingerprint = info.model_fingerprint();
  so.policy = parsed.ToString();
  so.policy_fingerprint = parsed.fingerprint();
  so.geometry = {4, 2, 32, kSpan};  // kvspan-brown: 4 layers, 2 KV heads, head_dim 32
  ASSERT_OK_AND_ASSIGN(auto spans, prefill::SpanStore::Create(so));
  ASSERT_OK_AND_ASSIGN(std::vector<cachestore::SpanKey> keys, spans->KeyChain(prompt));
  ASSERT_OK(so.client->Put(keys[2], "not a span at all"));

  GenerateOutcome after = RunGenerate(*stub, request);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.started.store_prompt_tokens(), 2 * kSpan) << "the run stops before the bad span";
  EXPECT_EQ(after.ids, cold.ids) << "the recomputed span gives the same output";
  const v1::StoreCounters counters = ServerInfo(*stub).store_counters();
  EXPECT_EQ(counters.bad_spans(), 1);
  EXPECT_EQ(counters.bad_spans_deleted(), 1);
  ASSERT_GE(WaitForStorePuts(*stub, 5 + 3), 5 + 3) << "spans 2-4 recomputed and put again";
  // Recomputed and put again: the whole prefix hits once more.
  GenerateOutcome healed = RunGenerate(*stub, request);
  ASSERT_TRUE(healed.status.ok());
  EXPECT_EQ(healed.started.store_prompt_tokens(), 5 * kSpan);

  // The store dies: requests still succeed, computed from scratch, same output.
  spans.reset();
  so.client.reset();
  EXPECT_EQ(store->Stop(SIGKILL), -SIGKILL);
  GenerateOutcome no_store = RunGenerate(*stub, request);
  ASSERT_TRUE(no_store.status.ok()) << no_store.status.error_message();
  EXPECT_EQ(no_store.started.store_prompt_tokens(), 0);
  EXPECT_EQ(no_store.ids, cold.ids);
  EXPECT_GT(ServerInfo(*stub).store_counters().store_errors(), 0);
  // Sessions need the store for their record: Unavailable, and the server keeps serving.
  grpc::ClientContext context;
  v1::OpenSessionRequest open;
  v1::OpenSessionResponse opened;
  EXPECT_EQ(stub->OpenSession(&context, open, &opened).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(RunGenerate(*stub, GreedyRequest(PromptIds(4, 10), 4, "", "")).status.ok());
}

}  // namespace
}  // namespace kvspan::tests
