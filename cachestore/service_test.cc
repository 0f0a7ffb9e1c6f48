// The gRPC service over real sockets on 127.0.0.1: round trips, every bad-input case
// (each followed by a good request, to show the server keeps serving), deadlines,
// health and reflection.
#include "cachestore/service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include "cachestore/internal/test_server.h"
#include "cachestore/key_scheme.h"
#include "cachestore/remote_client.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/status_conversion.h"

namespace kvspan::cachestore {
namespace {

using ::kvspan::cachestore::testing::Payload;
using ::kvspan::cachestore::testing::TestKey;
using ::kvspan::cachestore::testing::TestServer;
using ::kvspan::proto::FromGrpcStatus;
using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int64_t kMaxValue = 8 << 20;

StoreOptions SmallStore() {
  StoreOptions o;
  o.max_value_bytes = kMaxValue;
  return o;
}

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() : server_(SmallStore()) {
    RemoteClientOptions o;
    o.target = server_.address();
    o.timeout_ms = 20000;
    client_ = *RemoteCacheClient::Create(o);
    channel_ = grpc::CreateChannel(server_.address(), grpc::InsecureChannelCredentials());
    stub_ = kvspan::v1::CacheStore::NewStub(channel_);
  }

  // A good request after a bad one: the server still serves.
  void ExpectServing() {
    static uint32_t next = 1000;
    const uint32_t i = next++;
    const std::string p = Payload(i, 3000);
    ASSERT_OK(client_->Put(TestKey(i), p));
    ASSERT_OK_AND_ASSIGN(std::optional<Value> v, client_->Get(TestKey(i)));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(**v, p);
  }

  // Sends `requests` as one Put stream with the raw stub; returns the status.
  absl::Status RawPut(const std::vector<kvspan::v1::PutRequest>& requests) {
    grpc::ClientContext context;
    kvspan::v1::PutResponse response;
    auto writer = stub_->Put(&context, &response);
    for (const auto& r : requests) {
      if (!writer->Write(r)) break;
    }
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }

  static kvspan::v1::PutRequest Header(const std::string& key, uint64_t total, uint64_t checksum) {
    kvspan::v1::PutRequest r;
    r.mutable_header()->set_span_key(key);
    r.mutable_header()->set_total_bytes(total);
    r.mutable_header()->set_checksum(checksum);
    return r;
  }
  static kvspan::v1::PutRequest Chunk(uint64_t offset, const std::string& data) {
    kvspan::v1::PutRequest r;
    r.mutable_chunk()->set_offset(offset);
    r.mutable_chunk()->set_data(data);
    return r;
  }

  TestServer server_;
  std::unique_ptr<RemoteCacheClient> client_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<kvspan::v1::CacheStore::Stub> stub_;
};

TEST_F(ServiceTest, RoundTripOfALargeValueInChunks) {
  const std::string p = Payload(1, 3 * (1 << 20) + 12345);  // 4 chunks of 1 MiB
  ASSERT_OK(client_->Put(TestKey(1), p));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, client_->Get(TestKey(1)));
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(**v, p);
  std::vector<SpanKey> chain = {TestKey(1), TestKey(2)};
  ASSERT_OK_AND_ASSIGN(size_t n, client_->Lookup(TestKey(99), chain));
  EXPECT_EQ(n, 1u);
  ASSERT_OK(client_->Pin(TestKey(1)));
  ASSERT_OK_AND_ASSIGN(StoreStats s, client_->Stats());
  EXPECT_EQ(s.pinned_entries, 1);
  EXPECT_EQ(s.disk_entries, 1);
  EXPECT_EQ(s.memory_hits, 1);
  ASSERT_OK(client_->Unpin(TestKey(1)));
  ASSERT_OK(client_->Delete(TestKey(1)));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> gone, client_->Get(TestKey(1)));
  EXPECT_FALSE(gone.has_value());
  ASSERT_OK_AND_ASSIGN(s, client_->Stats());
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.disk_entries, 0);
}

TEST_F(ServiceTest, MalformedNamespaceIsInvalidArgument) {
  kvspan::v1::LookupRequest request;
  request.set_namespace_key("short");
  request.add_span_keys(TestKey(1).ToBytes());
  kvspan::v1::LookupResponse response;
  grpc::ClientContext context;
  EXPECT_THAT(FromGrpcStatus(stub_->Lookup(&context, request, &response)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace_key must be 16 bytes")));
  // An all-zero namespace (unset) too, through the client.
  EXPECT_THAT(client_->Lookup(SpanKey(), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace")));
  ExpectServing();
}

TEST_F(ServiceTest, EmptyKeyIsInvalidArgumentInEveryRpc) {
  {
    kvspan::v1::LookupRequest request;
    request.set_namespace_key(TestKey(9).ToBytes());
    request.add_span_keys(TestKey(1).ToBytes());
    request.add_span_keys("");
    kvspan::v1::LookupResponse response;
    grpc::ClientContext context;
    EXPECT_THAT(FromGrpcStatus(stub_->Lookup(&context, request, &response)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_keys[1]")));
  }
  {
    kvspan::v1::GetRequest request;
    grpc::ClientContext context;
    auto reader = stub_->Get(&context, request);
    kvspan::v1::GetResponse response;
    EXPECT_FALSE(reader->Read(&response));
    EXPECT_THAT(FromGrpcStatus(reader->Finish()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_key must be 16 bytes, got 0")));
  }
  {
    kvspan::v1::DeleteRequest request;
    kvspan::v1::DeleteResponse response;
    grpc::ClientContext context;
    EXPECT_THAT(FromGrpcStatus(stub_->Delete(&context, request, &response)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_key")));
  }
  {
    kvspan::v1::PinRequest request;
    request.set_pinned(true);
    kvspan::v1::PinResponse response;
    grpc::ClientContext context;
    EXPECT_THAT(FromGrpcStatus(stub_->Pin(&context, request, &response)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_key")));
  }
  EXPECT_THAT(RawPut({Header("", 10, 0), Chunk(0, "0123456789")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_key")));
  ExpectServing();
}

TEST_F(ServiceTest, OversizedValueIsResourceExhausted) {
  const std::string big = Payload(3, kMaxValue + 1);
  EXPECT_THAT(client_->Put(TestKey(3), big),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("over the limit")));
  // A header that announces too much is refused before any data arrives.
  EXPECT_THAT(RawPut({Header(TestKey(3).ToBytes(), uint64_t{1} << 40, 0)}),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("total_bytes")));
  // One message over the server's receive limit: gRPC itself refuses it.
  const std::string huge_chunk(kDefaultMaxMessageBytes + 1, 'x');
  EXPECT_THAT(RawPut({Header(TestKey(3).ToBytes(), huge_chunk.size(), ValueChecksum(huge_chunk)),
                      Chunk(0, huge_chunk)}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, client_->Get(TestKey(3)));
  EXPECT_FALSE(v.has_value());
  ExpectServing();
}

TEST_F(ServiceTest, BrokenChunkSequencesAreInvalidArgument) {
  const std::string key = TestKey(4).ToBytes();
  const std::string data = Payload(4, 100);
  const uint64_t sum = ValueChecksum(data);
  const std::string a = data.substr(0, 50), b = data.substr(50);
  struct Case {
    const char* what;
    std::vector<kvspan::v1::PutRequest> requests;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no messages", {}, "ended before its header"},
      {"chunk before header", {Chunk(0, a), Chunk(50, b)}, "must start with a header"},
      {"second header", {Header(key, 100, sum), Chunk(0, a), Header(key, 100, sum)}, "second header"},
      {"offset gap", {Header(key, 100, sum), Chunk(0, a), Chunk(60, b)}, "expected 50"},
      {"overlap", {Header(key, 100, sum), Chunk(0, a), Chunk(40, b)}, "expected 50"},
      {"short", {Header(key, 100, sum), Chunk(0, a)}, "ended after 50 of 100"},
      {"long", {Header(key, 60, sum), Chunk(0, a), Chunk(50, b)}, "exceed total_bytes"},
      {"empty chunk", {Header(key, 100, sum), Chunk(0, "")}, "is empty"},
      {"empty value", {Header(key, 0, ValueChecksum(""))}, "empty value"},
      {"neither", {Header(key, 100, sum), kvspan::v1::PutRequest()}, "neither header nor chunk"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(RawPut(c.requests), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.what;
  }
  std::vector<SpanKey> chain = {TestKey(4)};
  ASSERT_OK_AND_ASSIGN(size_t n, client_->Lookup(TestKey(99), chain));
  EXPECT_EQ(n, 0u);  // nothing partial became visible
  // The same sequence, well formed, is stored.
  ASSERT_OK(RawPut({Header(key, 100, sum), Chunk(0, a), Chunk(50, b)}));
  ASSERT_OK_AND_ASSIGN(n, client_->Lookup(TestKey(99), chain));
  EXPECT_EQ(n, 1u);
  ExpectServing();
}

TEST_F(ServiceTest, ChecksumMismatchIsDataLoss) {
  const std::string data = Payload(5, 100);
  EXPECT_THAT(RawPut({Header(TestKey(5).ToBytes(), 100, ValueChecksum(data) + 1), Chunk(0, data)}),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  ASSERT_OK_AND_ASSIGN(std::optional<Value> v, client_->Get(TestKey(5)));
  EXPECT_FALSE(v.has_value());
  ExpectServing();
}

TEST_F(ServiceTest, PinOfAbsentKeyIsNotFound) {
  EXPECT_THAT(client_->Pin(TestKey(6)), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(client_->Unpin(TestKey(6)), StatusIs(absl::StatusCode::kNotFound));
  ExpectServing();
}

TEST_F(ServiceTest, DeadlinesAreHonoured) {
  RemoteClientOptions o;
  o.target = server_.address();
  o.timeout_ms = 1;  // far too short for 8 MiB through gRPC
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RemoteCacheClient> hasty, RemoteCacheClient::Create(o));
  const std::string p = Payload(7, kMaxValue);
  EXPECT_THAT(hasty->Put(TestKey(7), p), StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_OK(client_->Put(TestKey(8), p));
  EXPECT_THAT(hasty->Get(TestKey(8)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  // An already expired deadline.
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
    kvspan::v1::StatsRequest request;
    kvspan::v1::StatsResponse response;
    EXPECT_THAT(FromGrpcStatus(stub_->Stats(&context, request, &response)),
                StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  ExpectServing();
  // The timed-out Put left nothing visible (the server saw the cancellation between chunks).
  std::vector<SpanKey> chain = {TestKey(7)};
  ASSERT_OK_AND_ASSIGN(size_t n, client_->Lookup(TestKey(99), chain));
  EXPECT_EQ(n, 0u);
}

TEST_F(ServiceTest, UnreachableServerIsUnavailable) {
  RemoteClientOptions o;
  o.target = "127.0.0.1:1";  // nothing listens on port 1
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RemoteCacheClient> c, RemoteCacheClient::Create(o));
  EXPECT_THAT(c->Stats(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(RemoteCacheClient::Create(RemoteClientOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Raw bytes of one unary call by method name (for services whose stubs are not built).
absl::StatusOr<std::string> GenericUnary(std::shared_ptr<grpc::Channel> channel,
                                         const std::string& method, const std::string& request) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  auto call = stub.PrepareUnaryCall(&context, method, request_buffer, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) return FromGrpcStatus(status);
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

TEST_F(ServiceTest, HealthReportsServing) {
  // grpc.health.v1.HealthCheckRequest{service: "kvspan.v1.CacheStore"}.
  const std::string name = "kvspan.v1.CacheStore";
  const std::string request = std::string("\x0a", 1) + static_cast<char>(name.size()) + name;
  ASSERT_OK_AND_ASSIGN(std::string response,
                       GenericUnary(channel_, "/grpc.health.v1.Health/Check", request));
  EXPECT_EQ(response, std::string("\x08\x01", 2));  // status: SERVING
  const std::string unknown = std::string("\x0a\x03", 2) + "foo";
  EXPECT_THAT(GenericUnary(channel_, "/grpc.health.v1.Health/Check", unknown),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ServiceTest, ReflectionListsTheService) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  // ServerReflectionRequest{list_services: ""} (field 7).
  grpc::Slice slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_THAT(out, HasSubstr("kvspan.v1.CacheStore"));
  EXPECT_THAT(out, HasSubstr("grpc.health.v1.Health"));
}

}  // namespace
}  // namespace kvspan::cachestore
