// The gRPC span transport over real sockets on 127.0.0.1: the tail blob's checks; the
// real PrefillService (shipped model, embedded store) pulled by PullPrefill; and the
// receiver's answer to every kind of bad stream a broken or hostile prefill worker can
// send (a fake Prefill server): truncated, wrong geometry, wrong model, a bad span, spans
// out of order, a bad tail, an oversized message.
// Then the same pull with SPAN_DELIVERY_DEVICE (the NCCL span transport's protocol): the
// gRPC part is real, the device link is gpu::ChannelSpanLinkFactory (the digest kernel in
// the CPU emulator) over gpu::LoopbackChannelFactory, a STAND-IN for NCCL, which cannot
// run on a machine without GPUs (gpu/nccl_channel_test.cc is the real one, on two GPUs).
#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "cachestore/embedded_client.h"
#include "cachestore/store.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "decode/decode_worker.h"
#include "gmock/gmock.h"
#include "gpu/device_span_link.h"
#include "gpu/loopback_channel.h"
#include "gtest/gtest.h"
#include "kernels/span_digest.h"
#include "kvcache/span_format.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prefill/prefill_worker.h"
#include "transport/prefill_client.h"
#include "transport/prefill_service.h"
#include "transport/span_transport.h"
#include "transport/tail_blob.h"

namespace kvspan::transport {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

model::DenseRows SomeRows(int layers, int kv_heads, int heads, int head_dim, int tokens, bool queries) {
  model::DenseRows r;
  r.first_position = 128;
  r.num_tokens = tokens;
  r.num_layers = layers;
  r.num_kv_heads = kv_heads;
  r.num_heads = heads;
  r.head_dim = head_dim;
  const int64_t kv = int64_t{layers} * tokens * kv_heads * head_dim;
  for (int64_t i = 0; i < kv; ++i) {
    r.k.push_back(0.001f * static_cast<float>(i % 997));
    r.v.push_back(-0.002f * static_cast<float>(i % 991));
  }
  if (queries) r.q.assign(int64_t{layers} * tokens * heads * head_dim, 0.5f);
  return r;
}

TEST(TailBlobTest, RoundTripsAndRejectsEveryBadByte) {
  const model::DenseRows rows = SomeRows(2, 2, 4, 8, 5, true);
  const std::vector<float> logits(50, 0.25f);
  const std::string blob = SerializeTail(rows, logits);
  const TailExpectation e{2, 2, 4, 8, 50, 128, 5, true};
  EXPECT_EQ(static_cast<int64_t>(blob.size()), TailBytes(e));
  ASSERT_OK_AND_ASSIGN(TailContents t, ParseTail(blob, e));
  EXPECT_EQ(t.rows.k, rows.k);
  EXPECT_EQ(t.rows.v, rows.v);
  EXPECT_EQ(t.rows.q, rows.q);
  EXPECT_EQ(t.logits, logits);
  for (size_t at : {size_t{0}, size_t{7}, size_t{20}, blob.size() / 2, blob.size() - 1}) {
    std::string bad = blob;
    bad[at] ^= 0x01;
    EXPECT_THAT(ParseTail(bad, e), StatusIs(absl::StatusCode::kDataLoss)) << "byte " << at;
  }
  EXPECT_THAT(ParseTail(blob.substr(0, blob.size() - 1), e), StatusIs(absl::StatusCode::kDataLoss));
  TailExpectation other = e;
  other.num_tokens = 4;
  EXPECT_THAT(ParseTail(blob, other), StatusIs(absl::StatusCode::kDataLoss));
  other = e;
  other.with_queries = false;
  EXPECT_THAT(ParseTail(blob, other), StatusIs(absl::StatusCode::kDataLoss));
}

// A Prefill server whose stream the test writes.
class FakePrefill final : public v1::Prefill::Service {
 public:
  std::function<grpc::Status(const v1::PrefillRequest&, grpc::ServerWriter<v1::PrefillChunk>*)> script;
  grpc::Status Prefill(grpc::ServerContext*, const v1::PrefillRequest* request,
                       grpc::ServerWriter<v1::PrefillChunk>* writer) override {
    return script(*request, writer);
  }
};

class TransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = model::Model::Load(kModel, {.num_threads = 1}).value().release();
    tokenizer_ = model::Tokenizer::LoadFromDir(kModel).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
  }
  void SetUp() override {
    cachestore::StoreOptions so;
    so.path = dir_.Sub("store");
    auto store = cachestore::CacheStore::Open(so);
    ASSERT_OK(store.status());
    prefill::StoreRouterOptions ro;
    ro.client =
        std::make_shared<cachestore::EmbeddedCacheClient>(std::shared_ptr<cachestore::CacheStore>(std::move(*store)));
    ro.model_fingerprint = model_->config().fingerprint;
    ro.geometry = {model_->config().num_layers, model_->config().num_kv_heads, model_->config().head_dim, 64};
    router_ = std::make_shared<prefill::StoreRouter>(ro);
    worker_ = std::make_unique<decode::DecodeWorker>(model_, tokenizer_, router_, decode::DecodeWorkerOptions{});
    in_process_ = std::make_unique<InProcessTransport>(worker_.get());
    prefill_ = std::make_unique<prefill::PrefillWorker>(router_, in_process_.get(), 1);
    service_ = std::make_unique<PrefillService>(model_->config(), prefill_.get(), worker_.get(), router_.get(),
                                                PrefillServiceOptions{.span_tokens = 64});
    real_ = Serve(service_.get(), &real_address_);
    fake_server_ = Serve(&fake_, &fake_address_);
    policy_ = kvcache::CachePolicy::Resolve("int4(g=32)", model_->config(), 64).value();
  }
  void TearDown() override {
    real_->Shutdown();
    fake_server_->Shutdown();
  }
  std::unique_ptr<grpc::Server> Serve(grpc::Service* service, std::string* address) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service);
    ConfigureWorkerServer(builder);
    builder.SetMaxSendMessageSize(256 << 20);  // the fake sender may exceed the receiver's limit
    auto server = builder.BuildAndStart();
    *address = "127.0.0.1:" + std::to_string(port);
    return server;
  }
  v1::PrefillRequest Request(int num_tokens) const {
    v1::PrefillRequest r;
    r.set_request_id("t");
    r.set_policy(policy_->canonical());
    for (int i = 0; i < num_tokens; ++i) r.add_tokens(3 + (i * 104729) % 4000);
    r.set_model_fingerprint(model_->config().fingerprint);
    r.set_span_tokens(64);
    return r;
  }
  absl::StatusOr<PulledPrefill> Pull(const std::string& address, const v1::PrefillRequest& request,
                                     DeviceSpanLinkFactory* device_links = nullptr,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    auto stub = v1::Prefill::NewStub(WorkerChannel(address, nullptr));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    return PullPrefill(*stub, &context, request, model_->config(), *policy_, device_links);
  }
  // The header the real service would send for `request`.
  v1::PrefillChunk Header(const v1::PrefillRequest& request) const {
    v1::PrefillChunk c;
    v1::PrefillHeader* h = c.mutable_header();
    h->set_model_fingerprint(model_->config().fingerprint);
    h->set_policy(policy_->canonical());
    h->set_span_tokens(64);
    h->set_num_layers(model_->config().num_layers);
    h->set_num_kv_heads(model_->config().num_kv_heads);
    h->set_head_dim(model_->config().head_dim);
    h->set_num_tokens(request.tokens_size());
    h->set_num_spans(request.tokens_size() / 64);
    return c;
  }

  static model::Model* model_;
  static model::Tokenizer* tokenizer_;
  kvspan::testing::TempDir dir_;
  std::shared_ptr<prefill::StoreRouter> router_;
  std::unique_ptr<decode::DecodeWorker> worker_;
  std::unique_ptr<InProcessTransport> in_process_;
  std::unique_ptr<prefill::PrefillWorker> prefill_;
  std::unique_ptr<PrefillService> service_;
  std::unique_ptr<grpc::Server> real_;
  std::string real_address_;
  FakePrefill fake_;
  std::unique_ptr<grpc::Server> fake_server_;
  std::string fake_address_;
  std::shared_ptr<const kvcache::CachePolicy> policy_;
};
model::Model* TransportTest::model_ = nullptr;
model::Tokenizer* TransportTest::tokenizer_ = nullptr;

TEST_F(TransportTest, RealPrefillServiceShipsEverySpanAndTheTail) {
  const v1::PrefillRequest request = Request(3 * 64 + 10);
  ASSERT_OK_AND_ASSIGN(PulledPrefill pulled, Pull(real_address_, request));
  EXPECT_EQ(pulled.spans.size(), 3u);
  EXPECT_EQ(pulled.rows.first_position, 192);
  EXPECT_EQ(pulled.rows.num_tokens, 10);
  EXPECT_EQ(static_cast<int>(pulled.logits.size()), model_->config().vocab_size);
  EXPECT_EQ(pulled.store_prompt_tokens, 0);
  int64_t bytes = 0;
  for (const kvcache::Span& s : pulled.spans) bytes += kvcache::SerializedSize(s);
  EXPECT_EQ(pulled.span_bytes, bytes);
  // The spans went to the store: the same prompt again is loaded from it and shipped.
  router_->FlushAll();
  ASSERT_OK_AND_ASSIGN(PulledPrefill again, Pull(real_address_, request));
  EXPECT_EQ(again.store_prompt_tokens, 192);
  ASSERT_EQ(again.spans.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(kvcache::SerializeSpan(again.spans[i]), kvcache::SerializeSpan(pulled.spans[i]));
  EXPECT_EQ(again.rows.k, pulled.rows.k);
  EXPECT_EQ(again.logits, pulled.logits);
}

TEST_F(TransportTest, RealPrefillServiceRefusesBadRequestsAndKeepsServing) {
  v1::PrefillRequest r = Request(100);
  r.set_model_fingerprint("another");
  EXPECT_THAT(Pull(real_address_, r), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model")));
  r = Request(100);
  r.set_span_tokens(32);
  EXPECT_THAT(Pull(real_address_, r), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("spans of 32")));
  r = Request(100);
  r.set_tokens(5, 99999);
  EXPECT_THAT(Pull(real_address_, r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
  r = Request(100);
  r.set_policy("int4");
  EXPECT_THAT(Pull(real_address_, r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("canonical")));
  r = Request(1100);
  EXPECT_THAT(Pull(real_address_, r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("context")));
  r = Request(0);
  EXPECT_THAT(Pull(real_address_, r), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(Pull(real_address_, Request(70)).status());
}

TEST_F(TransportTest, ReceiverRejectsEveryBadStream) {
  const v1::PrefillRequest request = Request(2 * 64 + 5);
  ASSERT_OK_AND_ASSIGN(PulledPrefill good, Pull(real_address_, request));
  auto span_chunk = [&](int i, std::string bytes) {
    v1::PrefillChunk c;
    c.mutable_span()->set_index(i);
    c.mutable_span()->set_span(std::move(bytes));
    return c;
  };
  const std::string span0 = kvcache::SerializeSpan(good.spans[0]);
  const std::string span1 = kvcache::SerializeSpan(good.spans[1]);
  const std::string blob = SerializeTail(good.rows, good.logits);
  auto tail_chunk = [&](std::string data) {
    v1::PrefillChunk c;
    c.mutable_tail()->set_data(std::move(data));
    c.mutable_tail()->set_last(true);
    return c;
  };
  struct Case {
    const char* name;
    std::function<void(grpc::ServerWriter<v1::PrefillChunk>*)> write;
    absl::StatusCode want;
  };
  std::vector<Case> cases = {
      {"truncated after a span", [&](auto* w) { w->Write(Header(request)); w->Write(span_chunk(0, span0)); },
       absl::StatusCode::kDataLoss},
      {"no header", [&](auto* w) { w->Write(span_chunk(0, span0)); }, absl::StatusCode::kDataLoss},
      {"wrong geometry",
       [&](auto* w) {
         v1::PrefillChunk h = Header(request);
         h.mutable_header()->set_num_kv_heads(7);
         w->Write(h);
       },
       absl::StatusCode::kDataLoss},
      {"wrong model",
       [&](auto* w) {
         v1::PrefillChunk h = Header(request);
         h.mutable_header()->set_model_fingerprint("other");
         w->Write(h);
       },
       absl::StatusCode::kFailedPrecondition},
      {"a flipped byte in a span",
       [&](auto* w) {
         std::string bad = span0;
         bad[bad.size() / 2] ^= 0x40;
         w->Write(Header(request));
         w->Write(span_chunk(0, bad));
       },
       absl::StatusCode::kDataLoss},
      {"spans out of order",
       [&](auto* w) { w->Write(Header(request)); w->Write(span_chunk(1, span1)); },
       absl::StatusCode::kDataLoss},
      {"span 1 sent as span 0",
       [&](auto* w) { w->Write(Header(request)); w->Write(span_chunk(0, span1)); },
       absl::StatusCode::kDataLoss},
      {"tail before the spans", [&](auto* w) { w->Write(Header(request)); w->Write(tail_chunk(blob)); },
       absl::StatusCode::kDataLoss},
      {"a flipped byte in the tail",
       [&](auto* w) {
         std::string bad = blob;
         bad[40] ^= 0x01;
         w->Write(Header(request));
         w->Write(span_chunk(0, span0));
         w->Write(span_chunk(1, span1));
         w->Write(tail_chunk(bad));
       },
       absl::StatusCode::kDataLoss},
      {"oversized message",
       [&](auto* w) {
         w->Write(Header(request));
         w->Write(span_chunk(0, std::string(kMaxTransportMessageBytes + 1, 'x')));
       },
       absl::StatusCode::kResourceExhausted},
  };
  for (const Case& c : cases) {
    fake_.script = [&](const v1::PrefillRequest&, grpc::ServerWriter<v1::PrefillChunk>* w) {
      c.write(w);
      return grpc::Status::OK;
    };
    EXPECT_THAT(Pull(fake_address_, request), StatusIs(c.want)) << c.name;
  }
  // The same stream, unbroken, is accepted.
  fake_.script = [&](const v1::PrefillRequest&, grpc::ServerWriter<v1::PrefillChunk>* w) {
    w->Write(Header(request));
    w->Write(span_chunk(0, span0));
    w->Write(span_chunk(1, span1));
    w->Write(tail_chunk(blob));
    return grpc::Status::OK;
  };
  ASSERT_OK_AND_ASSIGN(PulledPrefill ok, Pull(fake_address_, request));
  EXPECT_EQ(ok.logits, good.logits);
  // A prefill worker's own error reaches the caller as it is.
  fake_.script = [](const v1::PrefillRequest&, grpc::ServerWriter<v1::PrefillChunk>*) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
  };
  EXPECT_THAT(Pull(fake_address_, request), StatusIs(absl::StatusCode::kResourceExhausted));
}

// The device links of both sides of a device-delivery test (one process: one loopback
// factory pairs them), and a PrefillService on the test's worker that answers with them.
class DeviceTransportTest : public TransportTest {
 protected:
  void StartDeviceService(const gpu::LoopbackChannelOptions& loopback) {
    auto channels = std::make_unique<gpu::LoopbackChannelFactory>(loopback);
    loopback_ = channels.get();
    links_ = std::make_unique<gpu::ChannelSpanLinkFactory>(
        std::move(channels), gpu::ChannelSpanLinkOptions{.transfer_timeout = std::chrono::milliseconds(1500)});
    device_service_ = std::make_unique<PrefillService>(
        model_->config(), prefill_.get(), worker_.get(), router_.get(),
        PrefillServiceOptions{.span_tokens = 64, .device_links = links_.get()});
    device_server_ = Serve(device_service_.get(), &device_address_);
  }
  void TearDown() override {
    if (device_server_ != nullptr) device_server_->Shutdown();
    TransportTest::TearDown();
  }

  gpu::LoopbackChannelFactory* loopback_ = nullptr;  // owned by links_
  std::unique_ptr<gpu::ChannelSpanLinkFactory> links_;
  std::unique_ptr<PrefillService> device_service_;
  std::unique_ptr<grpc::Server> device_server_;
  std::string device_address_;
};

TEST_F(DeviceTransportTest, DeviceDeliveryShipsWhatGrpcShips) {
  StartDeviceService({});
  const v1::PrefillRequest request = Request(3 * 64 + 10);
  ASSERT_OK_AND_ASSIGN(PulledPrefill over_grpc, Pull(device_address_, request));
  EXPECT_EQ(loopback_->transfers(), 0);
  ASSERT_OK_AND_ASSIGN(PulledPrefill over_device, Pull(device_address_, request, links_.get()));
  EXPECT_EQ(loopback_->transfers(), 3);  // the spans went over the link, one transfer each
  ASSERT_EQ(over_device.spans.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(kvcache::SerializeSpan(over_device.spans[i]), kvcache::SerializeSpan(over_grpc.spans[i]));
  }
  EXPECT_EQ(over_device.span_bytes, over_grpc.span_bytes);
  EXPECT_EQ(over_device.rows.k, over_grpc.rows.k);
  EXPECT_EQ(over_device.logits, over_grpc.logits);
}

TEST_F(DeviceTransportTest, BytesCorruptedOnTheLinkAreDataLossByTheDeviceDigest) {
  StartDeviceService({.corrupt_transfer = 2});
  const v1::PrefillRequest request = Request(3 * 64 + 10);
  EXPECT_THAT(Pull(device_address_, request, links_.get()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("span 1: the device digest")));
  // The worker and the link factory keep serving.
  ASSERT_OK_AND_ASSIGN(PulledPrefill again, Pull(device_address_, request, links_.get()));
  EXPECT_EQ(again.spans.size(), 3u);
}

TEST_F(DeviceTransportTest, WorkerWithoutDeviceLinksRefuses) {
  gpu::ChannelSpanLinkFactory links(std::make_unique<gpu::LoopbackChannelFactory>(), {});
  EXPECT_THAT(Pull(real_address_, Request(100), &links, std::chrono::seconds(5)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no device span transport")));
}

TEST_F(DeviceTransportTest, ReceiverRejectsBadDeviceStreamsAndDeadSenders) {
  StartDeviceService({});
  const v1::PrefillRequest request = Request(2 * 64 + 5);
  ASSERT_OK_AND_ASSIGN(PulledPrefill good, Pull(real_address_, request));
  const std::string span0 = kvcache::SerializeSpan(good.spans[0]);
  const uint64_t digest0 = kernels::SpanDigestRef(span0.data(), static_cast<int64_t>(span0.size()));
  auto announce = [](int index, int64_t size_bytes, uint64_t digest) {
    v1::PrefillChunk c;
    c.mutable_span()->set_index(index);
    c.mutable_span()->set_size_bytes(size_bytes);
    c.mutable_span()->set_digest(digest);
    return c;
  };
  // A fake sender: the header, then joins the pair and runs `body` with its link.
  auto sender = [&](std::function<void(DeviceSpanLink&, grpc::ServerWriter<v1::PrefillChunk>*)> body) {
    fake_.script = [this, body, request](const v1::PrefillRequest& r, grpc::ServerWriter<v1::PrefillChunk>* w) {
      EXPECT_EQ(r.span_delivery(), v1::SPAN_DELIVERY_DEVICE);
      w->Write(Header(request));
      auto link = links_->Join(r.device_pair_id(), DeviceLinkRole::kSender,
                               std::chrono::steady_clock::now() + std::chrono::seconds(10));
      if (!link.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(link.status().message()));
      body(**link, w);
      return grpc::Status::OK;
    };
  };
  auto pull = [&] { return Pull(fake_address_, request, links_.get(), std::chrono::seconds(20)); };

  // The digest announced is not the bytes'.
  sender([&](DeviceSpanLink& link, grpc::ServerWriter<v1::PrefillChunk>* w) {
    ASSERT_OK_AND_ASSIGN(uint64_t d, link.Stage(span0));
    EXPECT_EQ(d, digest0);  // the device digest is SpanDigestRef's
    w->Write(announce(0, static_cast<int64_t>(span0.size()), d ^ 1));
    EXPECT_OK(link.SendStaged());
  });
  EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("span 0: the device digest")));
  // Sizes out of range, and bytes inline where the device should carry them.
  for (int64_t size : {int64_t{0}, int64_t{-5}, int64_t{kMaxTransportMessageBytes} + 1}) {
    sender([&](DeviceSpanLink&, grpc::ServerWriter<v1::PrefillChunk>* w) { w->Write(announce(0, size, digest0)); });
    EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a device delivery"))) << size;
  }
  sender([&](DeviceSpanLink&, grpc::ServerWriter<v1::PrefillChunk>* w) {
    v1::PrefillChunk c = announce(0, static_cast<int64_t>(span0.size()), digest0);
    c.mutable_span()->set_span(span0);
    w->Write(c);
  });
  EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a device delivery")));
  // Out of order: span 1 first.
  sender([&](DeviceSpanLink&, grpc::ServerWriter<v1::PrefillChunk>* w) {
    w->Write(announce(1, static_cast<int64_t>(span0.size()), digest0));
  });
  EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("out of order")));
  // Right digest and size, but bytes that are not a span of this sequence: ParseSpan's and
  // CheckSpanIdentity's checks still run after the digest (here: span 0's bytes as span 1).
  sender([&](DeviceSpanLink& link, grpc::ServerWriter<v1::PrefillChunk>* w) {
    for (int i = 0; i < 2; ++i) {
      ASSERT_OK_AND_ASSIGN(uint64_t d, link.Stage(span0));
      w->Write(announce(i, static_cast<int64_t>(span0.size()), d));
      EXPECT_OK(link.SendStaged());
    }
  });
  EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("span 1 is bad")));
  // A sender that dies after announcing a span: its link goes, the receiver's Receive
  // ends with Unavailable (no hang).
  sender([&](DeviceSpanLink&, grpc::ServerWriter<v1::PrefillChunk>* w) {
    w->Write(announce(0, static_cast<int64_t>(span0.size()), digest0));
  });
  EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("peer is gone")));
  // A sender that announces and stalls with its link open: the transfer's timeout.
  sender([&](DeviceSpanLink&, grpc::ServerWriter<v1::PrefillChunk>* w) {
    w->Write(announce(0, static_cast<int64_t>(span0.size()), digest0));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  });
  EXPECT_THAT(pull(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  // A sender that never joins: the receiver's join ends with the call's deadline.
  fake_.script = [&](const v1::PrefillRequest&, grpc::ServerWriter<v1::PrefillChunk>* w) {
    w->Write(Header(request));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    return grpc::Status::OK;
  };
  EXPECT_THAT(Pull(fake_address_, request, links_.get(), std::chrono::seconds(2)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

}  // namespace
}  // namespace kvspan::transport
