// A disaggregated cluster as real processes on 127.0.0.1 — `kvspan cachestore`, two
// `kvspan prefill`, two `kvspan decode` and a `kvspan frontend` — against a `kvspan serve`
// of the same model: the same greedy output for every kind of policy; sessions that move
// between decode workers through the store; and the faults (kill -9 of a decode worker
// mid-stream, of a prefill worker mid-transfer, of the store; a byte flipped on the wire;
// a client that gives up; bad calls to the worker services), each with what it must cost
// and nothing more. Every wait is bounded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvspan/v1/transport.grpc.pb.h"
#include "tests/serve_process.h"

#include <httplib.h>

namespace kvspan::tests {
namespace {

using Clock = std::chrono::steady_clock;
const std::string kBinary = KVSPAN_COMMAND;
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

template <typename Service>
std::unique_ptr<typename Service::Stub> StubOf(const ServeProcess& p) {
  return Service::NewStub(grpc::CreateChannel(p.address(), grpc::InsecureChannelCredentials()));
}

// The worker's Info (an empty one when the call fails: the test's expectation then fails).
template <typename Service>
v1::WorkerInfo InfoOf(const ServeProcess& p) {
  v1::WorkerInfo info;
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  (void)StubOf<Service>(p)->Info(&c, v1::WorkerInfoRequest(), &info);
  return info;
}
v1::WorkerInfo DecodeInfo(const ServeProcess& p) { return InfoOf<v1::Decode>(p); }
v1::WorkerInfo PrefillInfo(const ServeProcess& p) { return InfoOf<v1::Prefill>(p); }

// Polls `done` every 20 ms for up to `seconds`; whether it became true.
template <typename F>
bool WaitFor(F done, double seconds = 20) {
  const auto end = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (Clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

struct ClusterSpec {
  std::vector<std::vector<std::string>> prefill = {{}, {}};  // extra flags of each prefill worker
  int decode = 2;
  std::string probe_interval_ms = "100";
  bool host_names = false;  // give the frontend localhost:PORT instead of 127.0.0.1:PORT
  bool http = false;        // --http-listen on every role
  std::vector<std::string> worker_flags;    // on every prefill and decode worker
  std::vector<std::string> decode_flags;    // on every decode worker
  std::vector<std::string> frontend_flags;  // on the frontend
  std::vector<std::string> store_flags;     // on the cachestore
  std::vector<std::string> store_client_flags;  // on every role that calls the store
};

class Cluster {
 public:
  Cluster(const std::string& dir, const ClusterSpec& spec) : dir_(dir), store_flags_(spec.store_flags) {
    store_port_ = FreePort();
    StartStore();
    std::string prefill_list, decode_list;
    for (const auto& extra : spec.prefill) {
      std::vector<std::string> args = {"--model", kModel, "--store", store_->address(), "--threads", "1"};
      if (spec.http) args.insert(args.end(), {"--http-listen", "127.0.0.1:0"});
      args.insert(args.end(), spec.worker_flags.begin(), spec.worker_flags.end());
      args.insert(args.end(), spec.store_client_flags.begin(), spec.store_client_flags.end());
      args.insert(args.end(), extra.begin(), extra.end());
      prefill.push_back(ServeProcess::Role(kBinary, "prefill", args));
      prefill_list += (prefill_list.empty() ? "" : ",") + Named(prefill.back()->address(), spec.host_names);
    }
    for (int i = 0; i < spec.decode; ++i) {
      std::vector<std::string> args = {"--model", kModel, "--store", store_->address(), "--threads", "1"};
      if (spec.http) args.insert(args.end(), {"--http-listen", "127.0.0.1:0"});
      args.insert(args.end(), spec.worker_flags.begin(), spec.worker_flags.end());
      args.insert(args.end(), spec.decode_flags.begin(), spec.decode_flags.end());
      args.insert(args.end(), spec.store_client_flags.begin(), spec.store_client_flags.end());
      decode.push_back(ServeProcess::Role(kBinary, "decode", args));
      decode_list += (decode_list.empty() ? "" : ",") + Named(decode.back()->address(), spec.host_names);
    }
    std::vector<std::string> args = {"--model", kModel, "--store", store_->address(), "--prefill", prefill_list,
                                     "--decode", decode_list, "--probe-interval-ms", spec.probe_interval_ms};
    if (spec.http) args.insert(args.end(), {"--http-listen", "127.0.0.1:0"});
    args.insert(args.end(), spec.frontend_flags.begin(), spec.frontend_flags.end());
    args.insert(args.end(), spec.store_client_flags.begin(), spec.store_client_flags.end());
    frontend = ServeProcess::Role(kBinary, "frontend", args);
    stub = frontend->NewStub();
  }
  static std::string Named(const std::string& address, bool host_names) {
    return host_names ? "localhost" + address.substr(address.rfind(':')) : address;
  }
  void StartStore() {
    store_ = ServeProcess::Cachestore(kBinary, dir_ + "/store", "127.0.0.1:" + std::to_string(store_port_),
                                      store_flags_);
  }
  bool up() const {
    bool ok = store_->address() != "" && frontend->address() != "";
    for (const auto& p : prefill) ok = ok && !p->address().empty();
    for (const auto& d : decode) ok = ok && !d->address().empty();
    return ok;
  }
  // Sums of the decode workers' transport counters (the live ones).
  v1::TransportCounters DecodeCounters() const {
    v1::TransportCounters sum;
    for (const auto& d : decode) {
      if (d->pid() <= 0) continue;
      const v1::TransportCounters t = DecodeInfo(*d).transport();
      sum.set_sequences_received(sum.sequences_received() + t.sequences_received());
      sum.set_bad_transfers(sum.bad_transfers() + t.bad_transfers());
      sum.set_failed_transfers(sum.failed_transfers() + t.failed_transfers());
      sum.set_prefill_retries(sum.prefill_retries() + t.prefill_retries());
      sum.set_local_prefills(sum.local_prefills() + t.local_prefills());
      sum.set_resident_turns(sum.resident_turns() + t.resident_turns());
    }
    return sum;
  }

  std::string dir_;
  std::vector<std::string> store_flags_;
  int store_port_ = 0;
  std::unique_ptr<ServeProcess> store_;
  std::vector<std::unique_ptr<ServeProcess>> prefill;
  std::vector<std::unique_ptr<ServeProcess>> decode;
  std::unique_ptr<ServeProcess> frontend;
  std::unique_ptr<v1::Serving::Stub> stub;
};

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    serve_dir_ = new kvspan::testing::TempDir();
    serve_ = new ServeProcess(kBinary, {"--model", kModel, "--data", serve_dir_->Sub("data"), "--threads", "1"});
  }
  static void TearDownTestSuite() {
    delete serve_;
    delete serve_dir_;
  }
  // What `kvspan serve` answers (its own store: it is the reference, warm or cold alike).
  static std::vector<int32_t> Reference(const v1::GenerateRequest& request) {
    auto stub = serve_->NewStub();
    GenerateOutcome out = RunGenerate(*stub, request);
    EXPECT_TRUE(out.status.ok()) << out.status.error_message();
    return out.ids;
  }

  static kvspan::testing::TempDir* serve_dir_;
  static ServeProcess* serve_;
  kvspan::testing::TempDir dir_;
};
kvspan::testing::TempDir* ClusterTest::serve_dir_ = nullptr;
ServeProcess* ClusterTest::serve_ = nullptr;

TEST_F(ClusterTest, SameGreedyOutputAsServeForEveryKindOfPolicy) {
  ASSERT_FALSE(serve_->address().empty());
  Cluster cluster(dir_.path(), {});
  ASSERT_TRUE(cluster.up());
  int64_t puts = 0;
  int seed = 1;
  for (const std::string policy : {"dense", "bf16", "int4(g=32)", "kvmerger(sim=0.9,sigma=1.0)/int4(g=32)"}) {
    SCOPED_TRACE(policy);
    const v1::GenerateRequest request = GreedyRequest(PromptIds(seed++, 3 * 64 + 20), 8, policy, "");
    const std::vector<int32_t> want = Reference(request);
    ASSERT_EQ(want.size(), 8u);
    const GenerateOutcome cold = RunGenerate(*cluster.stub, request);
    ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
    EXPECT_EQ(cold.ids, want);
    EXPECT_EQ(cold.started.store_prompt_tokens(), 0);
    if (policy != "dense") puts = WaitForStorePuts(*cluster.stub, puts + 3);
    const GenerateOutcome warm = RunGenerate(*cluster.stub, request);
    ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
    EXPECT_EQ(warm.ids, want);
    EXPECT_EQ(warm.started.store_prompt_tokens(), policy == "dense" ? 0 : 3 * 64);
    EXPECT_GT(warm.finished.kv_bytes(), 0);
  }
  const v1::TransportCounters t = cluster.DecodeCounters();
  EXPECT_EQ(t.sequences_received(), 8);  // every request was shipped, none prefilled by a decode worker
  EXPECT_EQ(t.local_prefills(), 0);
  EXPECT_EQ(t.bad_transfers(), 0);
  // The frontend's ServerInfo reads like a serve node's.
  const v1::ServerInfoResponse info = ServerInfo(*cluster.stub);
  EXPECT_EQ(info.span_tokens(), 64);
  EXPECT_EQ(info.kv_budget_bytes(), 2 * (int64_t{1} << 30));
}

TEST_F(ClusterTest, SessionTurnsStayResidentThenMoveThroughTheStore) {
  Cluster cluster(dir_.path(), {});
  ASSERT_TRUE(cluster.up());
  auto serve = serve_->NewStub();
  auto open = [](v1::Serving::Stub& stub) {
    v1::OpenSessionRequest r;
    r.set_policy("int4(g=32)");
    v1::OpenSessionResponse out;
    grpc::ClientContext c;
    EXPECT_TRUE(stub.OpenSession(&c, r, &out).ok());
    return out.session_id();
  };
  const std::string cluster_session = open(*cluster.stub);
  const std::string serve_session = open(*serve);
  auto turn = [](v1::Serving::Stub& stub, const std::string& session, int seed, int n) {
    v1::GenerateRequest r = GreedyRequest(PromptIds(seed, n), 6, "", "");
    r.set_session_id(session);
    return RunGenerate(stub, r);
  };
  const int lengths[3] = {150, 40, 50};
  for (int t = 0; t < 3; ++t) {
    SCOPED_TRACE(t);
    if (t == 2) {
      // The decode worker holding the session dies: the next turn goes to the other one,
      // which loads the session's spans from the store.
      int holder = -1;
      for (int d = 0; d < 2; ++d) {
        if (DecodeInfo(*cluster.decode[d]).resident_sessions() == 1) holder = d;
      }
      ASSERT_GE(holder, 0);
      cluster.decode[holder]->Stop(SIGKILL);
      ASSERT_TRUE(WaitFor([&] { return ServerInfo(*cluster.stub).kv_budget_bytes() == (int64_t{1} << 30); }));
    }
    const GenerateOutcome want = turn(*serve, serve_session, 10 + t, lengths[t]);
    const GenerateOutcome got = turn(*cluster.stub, cluster_session, 10 + t, lengths[t]);
    ASSERT_TRUE(want.status.ok()) << want.status.error_message();
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.ids, want.ids);
    if (t == 1) {
      EXPECT_GT(got.started.resident_prompt_tokens(), 0);
    }
    if (t == 2) {
      EXPECT_EQ(got.started.resident_prompt_tokens(), 0);
      EXPECT_GT(got.started.store_prompt_tokens(), 0);
    }
  }
}

// Streams one Generate call in a thread, recording when it ended.
struct Stream {
  std::thread thread;
  GenerateOutcome out;
  Clock::time_point end;
  std::atomic<int> tokens{0};
};

TEST_F(ClusterTest, DecodeWorkerKilledMidStreamFailsOnlyItsStreams) {
  Cluster cluster(dir_.path(), {});
  ASSERT_TRUE(cluster.up());
  constexpr int kStreams = 6;
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < kStreams; ++i) {
    auto s = std::make_unique<Stream>();
    Stream* raw = s.get();
    raw->thread = std::thread([&cluster, raw, i] {
      v1::GenerateRequest r = GreedyRequest(PromptIds(40 + i, 100), 900, "int4(g=32)", "");
      raw->out = RunGenerate(*cluster.stub, r, 120000);
      raw->end = Clock::now();
    });
    streams.push_back(std::move(s));
  }
  // Every stream runs on one of the two decode workers; kill the first.
  int on_first = 0;
  ASSERT_TRUE(WaitFor([&] {
    on_first = DecodeInfo(*cluster.decode[0]).running_sequences();
    return on_first + DecodeInfo(*cluster.decode[1]).running_sequences() == kStreams;
  }));
  ASSERT_GT(on_first, 0);
  const Clock::time_point killed = Clock::now();
  cluster.decode[0]->Stop(SIGKILL);
  int failed = 0;
  double worst_ms = 0;
  for (auto& s : streams) {
    s->thread.join();
    if (s->out.status.ok()) {
      EXPECT_EQ(s->out.finished.usage().completion_tokens(), 900);
    } else {
      ++failed;
      EXPECT_EQ(s->out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << s->out.status.error_message();
      worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(s->end - killed).count());
    }
  }
  EXPECT_EQ(failed, on_first);
  std::printf("decode worker killed: %d of %d streams failed, the last %.0f ms after the kill\n", failed, kStreams,
              worst_ms);
  // New requests go to the survivor.
  const v1::GenerateRequest next = GreedyRequest(PromptIds(50, 100), 8, "int4(g=32)", "");
  const GenerateOutcome after = RunGenerate(*cluster.stub, next);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids, Reference(next));
}

// A decode worker that died before the frontend noticed (its probes are 10 s apart here):
// calls routed to it fail before anything reached the client, so they run on the other.
TEST_F(ClusterTest, RequestsSentToAJustKilledDecodeWorkerRunElsewhere) {
  ClusterSpec spec;
  spec.probe_interval_ms = "10000";
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  cluster.decode[0]->Stop(SIGKILL);
  std::vector<std::thread> threads;
  std::vector<GenerateOutcome> outs(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      outs[i] = RunGenerate(*cluster.stub, GreedyRequest(PromptIds(100 + i, 90), 4, "int4(g=32)", ""), 60000);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(outs[i].status.ok()) << i << ": " << outs[i].status.error_message();
    EXPECT_EQ(outs[i].ids, Reference(GreedyRequest(PromptIds(100 + i, 90), 4, "int4(g=32)", "")));
  }
}

TEST_F(ClusterTest, PrefillWorkerKilledMidTransferRetriesThenFallsBackToTheDecodeWorker) {
  // The first prefill worker stops sending after one span, holding the stream: it is then
  // killed with the sequence half shipped.
  ClusterSpec spec;
  spec.prefill = {{"--test-stall-after-spans", "1"}, {}};
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  // Three concurrent clients; at least the first is stalled on the first prefill worker
  // when it dies.
  constexpr int kClients = 3;
  std::vector<v1::GenerateRequest> requests;
  std::vector<std::vector<int32_t>> want;
  for (int i = 0; i < kClients; ++i) {
    requests.push_back(GreedyRequest(PromptIds(60 + i, 3 * 64 + 10), 8, "int4(g=32)", ""));
    want.push_back(Reference(requests.back()));
  }
  std::vector<GenerateOutcome> outs(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] { outs[i] = RunGenerate(*cluster.stub, requests[i], 60000); });
  }
  ASSERT_TRUE(WaitFor([&] { return PrefillInfo(*cluster.prefill[0]).transport().spans_sent() >= 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the others reach a worker too
  cluster.prefill[0]->Stop(SIGKILL);
  for (auto& c : clients) c.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(outs[i].status.ok()) << i << ": " << outs[i].status.error_message();
    EXPECT_EQ(outs[i].ids, want[i]) << i;
  }
  v1::TransportCounters t = cluster.DecodeCounters();
  EXPECT_GE(t.failed_transfers(), 1);
  EXPECT_EQ(t.prefill_retries(), t.failed_transfers());  // each failed pull went on to the other worker
  EXPECT_EQ(t.local_prefills(), 0);
  // No prefill worker left: the decode worker prefills itself.
  cluster.prefill[1]->Stop(SIGKILL);
  const v1::GenerateRequest other = GreedyRequest(PromptIds(61, 3 * 64 + 10), 8, "int4(g=32)", "");
  const GenerateOutcome alone = RunGenerate(*cluster.stub, other, 60000);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  EXPECT_EQ(alone.ids, Reference(other));
  EXPECT_EQ(cluster.DecodeCounters().local_prefills(), 1);
}

// --prefill / --decode as host names: resolved by the frontend (a name with several records
// is several workers; here localhost, which may also resolve to ::1, where nothing listens:
// that record fails its probes and is never routed to).
TEST_F(ClusterTest, WorkerAddressesMayBeHostNames) {
  ClusterSpec spec;
  spec.host_names = true;
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  const v1::GenerateRequest request = GreedyRequest(PromptIds(110, 3 * 64 + 3), 6, "int4(g=32)", "");
  const GenerateOutcome out = RunGenerate(*cluster.stub, request, 60000);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids, Reference(request));
  EXPECT_EQ(cluster.DecodeCounters().sequences_received(), 1);  // pulled from a prefill worker found by name
}

TEST_F(ClusterTest, StoreDownMeansRecomputeAndHitsResumeWhenItReturns) {
  Cluster cluster(dir_.path(), {});
  ASSERT_TRUE(cluster.up());
  const v1::GenerateRequest a = GreedyRequest(PromptIds(70, 3 * 64 + 5), 6, "int4(g=32)", "");
  const std::vector<int32_t> want = Reference(a);
  ASSERT_EQ(RunGenerate(*cluster.stub, a).ids, want);
  WaitForStorePuts(*cluster.stub, 3);
  cluster.store_->Stop(SIGKILL);
  std::vector<GenerateOutcome> down(3);
  std::vector<std::thread> clients;
  for (int i = 0; i < 3; ++i) clients.emplace_back([&, i] { down[i] = RunGenerate(*cluster.stub, a, 60000); });
  for (auto& c : clients) c.join();
  for (const GenerateOutcome& d : down) {
    ASSERT_TRUE(d.status.ok()) << d.status.error_message();
    EXPECT_EQ(d.ids, want);
    EXPECT_EQ(d.started.store_prompt_tokens(), 0);
  }
  cluster.StartStore();
  ASSERT_FALSE(cluster.store_->address().empty());
  GenerateOutcome back;
  EXPECT_TRUE(WaitFor(
      [&] {
        back = RunGenerate(*cluster.stub, a, 60000);
        return back.status.ok() && back.started.store_prompt_tokens() == 3 * 64;
      },
      30))
      << "no store hit after the store came back";
  EXPECT_EQ(back.ids, want);
}

TEST_F(ClusterTest, CorruptSpanOnTheWireIsDetectedAndNeverDecoded) {
  ClusterSpec spec;
  spec.prefill = {{"--test-corrupt-span", "1"}, {}};
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  const v1::GenerateRequest request = GreedyRequest(PromptIds(80, 3 * 64 + 7), 8, "int4(g=32)", "");
  const GenerateOutcome out = RunGenerate(*cluster.stub, request, 60000);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids, Reference(request));
  const v1::TransportCounters t = cluster.DecodeCounters();
  EXPECT_EQ(t.bad_transfers(), 1);
  EXPECT_EQ(t.prefill_retries(), 1);
  EXPECT_EQ(t.sequences_received(), 1);
}

TEST_F(ClusterTest, ClientThatGivesUpFreesTheDecodeWorkersMemory) {
  Cluster cluster(dir_.path(), {});
  ASSERT_TRUE(cluster.up());
  const GenerateOutcome out =
      RunGenerate(*cluster.stub, GreedyRequest(PromptIds(90, 100), 900, "int4(g=32)", ""), 400);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitFor([&] {
    int64_t bytes = 0, running = 0;
    for (const auto& d : cluster.decode) {
      const v1::WorkerInfo info = DecodeInfo(*d);
      bytes += info.kv_bytes_in_use();
      running += info.running_sequences();
    }
    for (const auto& p : cluster.prefill) running += PrefillInfo(*p).running_sequences();
    return bytes == 0 && running == 0;
  }));
}

// A client that cancels while its sequence is still on the wire: the cancellation crosses
// both hops (frontend -> decode worker -> prefill worker). The prefill worker here holds
// its stream open after one span until its call is cancelled, so its call ends only if the
// cancellation reached it.
TEST_F(ClusterTest, CancellationReachesThePrefillWorker) {
  ClusterSpec spec;
  spec.prefill = {{"--test-stall-after-spans", "1"}};
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  grpc::ClientContext context;
  GenerateOutcome out;
  std::thread client([&] {
    auto reader = cluster.stub->Generate(&context, GreedyRequest(PromptIds(97, 3 * 64), 4, "int4(g=32)", ""));
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
    }
    out.status = reader->Finish();
  });
  ASSERT_TRUE(WaitFor([&] { return PrefillInfo(*cluster.prefill[0]).transport().spans_sent() >= 1; }));
  EXPECT_EQ(PrefillInfo(*cluster.prefill[0]).running_sequences(), 1);
  context.TryCancel();
  client.join();
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return PrefillInfo(*cluster.prefill[0]).running_sequences() == 0; }));
  EXPECT_TRUE(WaitFor([&] { return DecodeInfo(*cluster.decode[0]).running_sequences() == 0; }));
}

// The HTTP side of every role: the frontend's OpenAI-compatible API over the cluster, and
// /metrics on each role counting the bytes the span transport moved.
TEST_F(ClusterTest, OpenAiHttpOnTheFrontendAndMetricsOnEveryRole) {
  ClusterSpec spec;
  spec.prefill = {{}};
  spec.decode = 1;
  spec.http = true;
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  auto client = [](const ServeProcess& p) {
    const std::string& a = p.http_address();
    auto c = std::make_unique<httplib::Client>(a.substr(0, a.rfind(':')), std::stoi(a.substr(a.rfind(':') + 1)));
    c->set_connection_timeout(10);
    c->set_read_timeout(60);
    return c;
  };
  ASSERT_FALSE(cluster.frontend->http_address().empty());
  auto frontend = client(*cluster.frontend);
  std::string prompt;
  for (int i = 0; i < 30; ++i) prompt += "The jury said it did find that the city was well run. ";
  const std::string body = "{\"prompt\": \"" + prompt + "\", \"max_tokens\": 4, \"temperature\": 0}";
  auto response = frontend->Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  EXPECT_EQ(response->status, 200) << response->body;
  EXPECT_THAT(response->body, ::testing::HasSubstr("\"prompt_tokens\""));
  EXPECT_THAT(response->body, ::testing::HasSubstr("\"text\""));
  auto metric = [&](const ServeProcess& p, const std::string& direction) -> double {
    auto r = client(p)->Get("/metrics");
    if (!r || r->status != 200) return -1;
    const std::string key = "kvspan:span_transfer_bytes_total{direction=\"" + direction + "\"} ";
    const size_t at = r->body.find(key);
    return at == std::string::npos ? -1 : std::stod(r->body.substr(at + key.size()));
  };
  EXPECT_GT(metric(*cluster.prefill[0], "sent"), 0);
  EXPECT_EQ(metric(*cluster.prefill[0], "received"), 0);
  EXPECT_GT(metric(*cluster.decode[0], "received"), 0);
  EXPECT_EQ(metric(*cluster.decode[0], "received"), metric(*cluster.prefill[0], "sent"));
  // The frontend sums its workers' reports (refreshed at every probe).
  EXPECT_TRUE(WaitFor([&] { return metric(*cluster.frontend, "received") == metric(*cluster.decode[0], "received"); }));
  auto health = client(*cluster.decode[0])->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

// Mutual TLS between the roles: workers and the cachestore serve TLS and require a client
// certificate; the frontend and the decode workers call the workers with --peer-tls-*,
// every role calls the store with --store-tls-*. A frontend without them, or with a
// certificate from another CA, reaches no worker.
TEST_F(ClusterTest, MutualTlsBetweenTheRoles) {
  MakeTestCertificates(dir_.path());
  const std::string d = dir_.path() + "/";
  const std::vector<std::string> peer = {"--peer-tls-ca", d + "ca.pem", "--peer-tls-cert", d + "client.pem",
                                         "--peer-tls-key", d + "client.key"};
  ClusterSpec spec;
  spec.prefill = {{}};
  spec.decode = 1;
  spec.worker_flags = {"--tls-cert", d + "server.pem", "--tls-key", d + "server.key", "--tls-client-ca", d + "ca.pem"};
  spec.decode_flags = peer;
  spec.frontend_flags = peer;
  spec.store_flags = spec.worker_flags;
  spec.store_client_flags = {"--store-tls-ca", d + "ca.pem", "--store-tls-cert", d + "client.pem",
                             "--store-tls-key", d + "client.key"};
  Cluster cluster(dir_.path(), spec);
  ASSERT_TRUE(cluster.up());
  const v1::GenerateRequest request = GreedyRequest(PromptIds(120, 3 * 64 + 5), 6, "int4(g=32)", "");
  const GenerateOutcome out = RunGenerate(*cluster.stub, request, 60000);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids, Reference(request));
  // It was shipped from the prefill worker over TLS, not prefilled by the decode worker.
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(d + "ca.pem").value();
  ssl.pem_cert_chain = ReadFile(d + "client.pem").value();
  ssl.pem_private_key = ReadFile(d + "client.key").value();
  auto decode = v1::Decode::NewStub(grpc::CreateChannel(cluster.decode[0]->address(), grpc::SslCredentials(ssl)));
  v1::WorkerInfo info;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(decode->Info(&context, v1::WorkerInfoRequest(), &info).ok());
  EXPECT_EQ(info.transport().sequences_received(), 1);
  EXPECT_EQ(info.transport().local_prefills(), 0);
  // The store over TLS: the spans were put, and the prompt again is loaded from it.
  WaitForStorePuts(*cluster.stub, 3);
  const GenerateOutcome warm = RunGenerate(*cluster.stub, request, 60000);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.started.store_prompt_tokens(), 3 * 64);
  EXPECT_EQ(warm.ids, out.ids);
  // Frontends that cannot authenticate find no healthy worker.
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{},
        std::vector<std::string>{"--peer-tls-ca", d + "ca.pem", "--peer-tls-cert", d + "stranger.pem",
                                 "--peer-tls-key", d + "stranger.key"}}) {
    std::vector<std::string> args = {"--model", kModel, "--store", cluster.store_->address(), "--prefill",
                                     cluster.prefill[0]->address(), "--decode", cluster.decode[0]->address()};
    args.insert(args.end(), spec.store_client_flags.begin(), spec.store_client_flags.end());
    args.insert(args.end(), bad.begin(), bad.end());
    auto other = ServeProcess::Role(kBinary, "frontend", args);
    ASSERT_FALSE(other->address().empty());
    const GenerateOutcome refused = RunGenerate(*other->NewStub(), request, 30000);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.status.error_message();
  }
}

TEST_F(ClusterTest, WorkerServicesRefuseBadCallsAndKeepServing) {
  Cluster cluster(dir_.path(), {});
  ASSERT_TRUE(cluster.up());
  const v1::ServerInfoResponse info = ServerInfo(*cluster.stub);
  auto decode = StubOf<v1::Decode>(*cluster.decode[0]);
  auto call = [&](const v1::DecodeRequest& r) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = decode->Generate(&c, r);
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
    }
    return reader->Finish().error_code();
  };
  v1::DecodeRequest good;
  *good.mutable_request() = GreedyRequest(PromptIds(95, 80), 4, "int4(g=32)", "");
  good.set_model_fingerprint(info.model_fingerprint());
  good.set_span_tokens(64);
  good.add_prefill_workers(cluster.prefill[0]->address());
  v1::DecodeRequest r = good;
  r.set_model_fingerprint("another model");
  EXPECT_EQ(call(r), grpc::StatusCode::FAILED_PRECONDITION);
  r = good;
  r.set_span_tokens(16);
  EXPECT_EQ(call(r), grpc::StatusCode::FAILED_PRECONDITION);
  r = good;
  r.mutable_request()->mutable_token_ids()->set_ids(3, -5);
  EXPECT_EQ(call(r), grpc::StatusCode::INVALID_ARGUMENT);
  r = good;
  r.mutable_request()->set_policy("no-such-policy");
  EXPECT_EQ(call(r), grpc::StatusCode::INVALID_ARGUMENT);
  // A message past the transport's limit (64 MiB) is refused by gRPC itself.
  v1::PrefillRequest huge;
  huge.set_model_fingerprint(info.model_fingerprint());
  huge.set_span_tokens(64);
  huge.set_policy("int4(g=32)");
  huge.mutable_tokens()->Resize(7 << 20, -1);  // 10 bytes each on the wire: 70 MiB
  grpc::ClientContext c;
  auto reader = StubOf<v1::Prefill>(*cluster.prefill[0])->Prefill(&c, huge);
  v1::PrefillChunk chunk;
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Both workers still serve.
  EXPECT_EQ(call(good), grpc::StatusCode::OK);
  const GenerateOutcome out = RunGenerate(*cluster.stub, good.request());
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
}

}  // namespace
}  // namespace kvspan::tests
