// `kvspan serve` as its own process, clients over 127.0.0.1: greedy equivalence with
// `kvspan generate`, cold = warm = warm-after-restart for lossy policies, batch invariance,
// sessions, every bad input, concurrency with memory returning to zero, cancellation,
// SIGTERM drain and SIGKILL recovery.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/run_command.h"
#include "tests/serve_process.h"

namespace kvspan::tests {
namespace {

using ::testing::HasSubstr;
using kvspan::testing::TempDir;

const std::string kBinary = KVSPAN_COMMAND;
const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";
constexpr int kSpan = 64;

std::vector<std::string> ServeArgs(const std::string& data, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"--model", kModel, "--data", data, "--threads", "2", "--grace-ms", "5000"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Polls ServerInfo until nothing runs and no KV memory is held (or 30 s pass).
v1::ServerInfoResponse WaitDrained(v1::Serving::Stub& stub) {
  v1::ServerInfoResponse info;
  for (int i = 0; i < 300; ++i) {
    info = ServerInfo(stub);
    if (info.running_sequences() == 0 && info.waiting_requests() == 0 && info.kv_bytes_in_use() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return info;
}

std::string OpenSession(v1::Serving::Stub& stub, const std::string& policy, int64_t idle_timeout_ms = 0) {
  grpc::ClientContext context;
  v1::OpenSessionRequest request;
  request.set_policy(policy);
  request.set_idle_timeout_ms(idle_timeout_ms);
  v1::OpenSessionResponse response;
  grpc::Status s = stub.OpenSession(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response.session_id();
}

grpc::Status CloseSession(v1::Serving::Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  v1::CloseSessionRequest request;
  request.set_session_id(id);
  v1::CloseSessionResponse response;
  return stub.CloseSession(&context, request, &response);
}

// The ids `kvspan generate` prints (its last stdout line) for a greedy run.
std::vector<int32_t> GenerateCommandIds(const std::string& prompt, int max_tokens) {
  const std::string command = kBinary + " generate --model " + kModel + " --threads 2 --temperature 0 --max-tokens " +
                              std::to_string(max_tokens) + " --print-token-ids --prompt '" + prompt + "' 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  EXPECT_EQ(pclose(pipe), 0);
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  std::vector<int32_t> ids;
  for (absl::string_view t : absl::StrSplit(lines.back(), ' ', absl::SkipEmpty())) {
    int32_t id;
    EXPECT_TRUE(absl::SimpleAtoi(t, &id)) << t;
    ids.push_back(id);
  }
  return ids;
}

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServeProcess>(kBinary, ServeArgs(dir_.Sub("data")));
    ASSERT_FALSE(server_->address().empty()) << "kvspan serve did not come up";
    stub_ = server_->NewStub();
  }
  void Restart(int signal_number) {
    stub_.reset();
    server_->Stop(signal_number);
    server_ = std::make_unique<ServeProcess>(kBinary, ServeArgs(dir_.Sub("data")));
    ASSERT_FALSE(server_->address().empty());
    stub_ = server_->NewStub();
  }

  TempDir dir_;
  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<v1::Serving::Stub> stub_;
};

TEST_F(ServeTest, DensePolicyEqualsGenerateCommand) {
  const std::string prompt = "The jury said that the city had been taken by the election";
  v1::GenerateRequest request;
  request.set_text(prompt);
  request.mutable_sampling()->set_temperature(0);
  request.set_max_tokens(48);
  request.set_policy("dense");
  GenerateOutcome out = RunGenerate(*stub_, request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids, GenerateCommandIds(prompt, 48));
  EXPECT_EQ(out.started.policy(), "dense");
  EXPECT_EQ(out.started.store_prompt_tokens(), 0);
  EXPECT_EQ(out.finished.text(), out.text);
  EXPECT_GT(out.finished.kv_bytes(), 0);
}

TEST_F(ServeTest, ColdWarmAndWarmAfterRestartAreIdentical) {
  const std::vector<std::string> policies = {"bf16", "int4(g=32)", "kvmerger(sim=0.7)/int4(g=64)",
                                             "sinks(4)+window(16)+expected-attn(keep=0.25)/int4(g=32)"};
  const std::vector<int32_t> prompt = PromptIds(7, 5 * kSpan + 21);  // 5 full spans and a tail
  std::vector<std::vector<int32_t>> cold(policies.size());
  for (size_t p = 0; p < policies.size(); ++p) {
    const v1::GenerateRequest request = GreedyRequest(prompt, 24, policies[p], "cold-warm");
    const int64_t puts = StorePutsOk(*stub_);
    GenerateOutcome c = RunGenerate(*stub_, request);
    ASSERT_TRUE(c.status.ok()) << policies[p] << ": " << c.status.error_message();
    ASSERT_GE(WaitForStorePuts(*stub_, puts + 5), puts + 5) << "the cold request's 5 spans reach the store";
    EXPECT_EQ(c.started.store_prompt_tokens(), 0) << policies[p];
    EXPECT_EQ(c.started.computed_prompt_tokens(), static_cast<int>(prompt.size()));
    GenerateOutcome w = RunGenerate(*stub_, request);
    ASSERT_TRUE(w.status.ok());
    EXPECT_EQ(w.started.store_prompt_tokens(), 5 * kSpan) << policies[p];
    EXPECT_EQ(w.ids, c.ids) << policies[p] << ": warm differs from cold";
    EXPECT_EQ(w.finished.usage().cached_prompt_tokens(), 5 * kSpan);
    cold[p] = c.ids;
  }
  Restart(SIGTERM);
  for (size_t p = 0; p < policies.size(); ++p) {
    GenerateOutcome r = RunGenerate(*stub_, GreedyRequest(prompt, 24, policies[p], "cold-warm"));
    ASSERT_TRUE(r.status.ok());
    EXPECT_EQ(r.started.store_prompt_tokens(), 5 * kSpan) << policies[p];
    EXPECT_EQ(r.ids, cold[p]) << policies[p] << ": warm after restart differs from cold";
  }
}

TEST_F(ServeTest, OutputDoesNotDependOnTheBatch) {
  constexpr int kClients = 16;
  for (const std::string policy : {"int4(g=32)", "dense"}) {
    std::vector<std::vector<int32_t>> alone(kClients);
    for (int i = 0; i < kClients; ++i) {
      // A distinct tenant per run: every request computes its prompt.
      GenerateOutcome out = RunGenerate(*stub_, GreedyRequest(PromptIds(100 + i, 40 + 9 * i), 20, policy, "alone"));
      ASSERT_TRUE(out.status.ok()) << out.status.error_message();
      alone[i] = out.ids;
    }
    std::vector<GenerateOutcome> batched(kClients);
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i] {
        auto stub = server_->NewStub();
        batched[i] = RunGenerate(*stub, GreedyRequest(PromptIds(100 + i, 40 + 9 * i), 20, policy, "batched"));
      });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kClients; ++i) {
      ASSERT_TRUE(batched[i].status.ok()) << batched[i].status.error_message();
      EXPECT_EQ(batched[i].ids, alone[i]) << policy << ", request " << i;
    }
  }
}

TEST_F(ServeTest, TwoTurnSessionReusesTurnOneAndEqualsAFreshRequest) {
  const std::string policy = "int4(g=32)";
  const std::string session = OpenSession(*stub_, policy);
  ASSERT_FALSE(session.empty());
  const std::vector<int32_t> turn1 = PromptIds(11, 3 * kSpan + 10), turn2 = PromptIds(12, 30);
  v1::GenerateRequest r1 = GreedyRequest(turn1, 40, "", "");
  r1.set_session_id(session);
  GenerateOutcome o1 = RunGenerate(*stub_, r1);
  ASSERT_TRUE(o1.status.ok()) << o1.status.error_message();
  v1::GenerateRequest r2 = GreedyRequest(turn2, 16, "", "");
  r2.set_session_id(session);
  GenerateOutcome o2 = RunGenerate(*stub_, r2);
  ASSERT_TRUE(o2.status.ok()) << o2.status.error_message();
  const int history = static_cast<int>(turn1.size() + o1.ids.size());
  EXPECT_EQ(o2.started.prompt_tokens(), history + static_cast<int>(turn2.size()));
  EXPECT_GE(o2.finished.usage().cached_prompt_tokens(), history / kSpan * kSpan);
  EXPECT_GT(o2.started.resident_prompt_tokens(), 0) << "turn one's cache was resident";

  std::vector<int32_t> all = turn1;
  all.insert(all.end(), o1.ids.begin(), o1.ids.end());
  all.insert(all.end(), turn2.begin(), turn2.end());
  GenerateOutcome fresh = RunGenerate(*stub_, GreedyRequest(all, 16, policy, "fresh-tenant"));
  ASSERT_TRUE(fresh.status.ok());
  EXPECT_EQ(fresh.started.store_prompt_tokens(), 0);
  EXPECT_EQ(fresh.ids, o2.ids) << "the session's turn differs from a fresh request over its history";

  // Once closed, it is gone, and its resident memory with it.
  EXPECT_TRUE(CloseSession(*stub_, session).ok());
  v1::GenerateRequest r3 = GreedyRequest(turn2, 4, "", "");
  r3.set_session_id(session);
  EXPECT_EQ(RunGenerate(*stub_, r3).status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(WaitDrained(*stub_).kv_bytes_in_use(), 0);
}

TEST_F(ServeTest, SessionContinuesFromTheStoreAfterRestart) {
  const std::string session = OpenSession(*stub_, "int8(g=32)");
  v1::GenerateRequest r1 = GreedyRequest(PromptIds(21, 2 * kSpan + 5), 30, "", "");
  r1.set_session_id(session);
  GenerateOutcome o1 = RunGenerate(*stub_, r1);
  ASSERT_TRUE(o1.status.ok()) << o1.status.error_message();
  Restart(SIGTERM);
  v1::GenerateRequest r2 = GreedyRequest(PromptIds(22, 10), 8, "", "");
  r2.set_session_id(session);
  GenerateOutcome o2 = RunGenerate(*stub_, r2);
  ASSERT_TRUE(o2.status.ok()) << o2.status.error_message();
  const int history = 2 * kSpan + 5 + static_cast<int>(o1.ids.size());
  EXPECT_EQ(o2.started.prompt_tokens(), history + 10);
  EXPECT_EQ(o2.started.store_prompt_tokens(), history / kSpan * kSpan);
  EXPECT_EQ(o2.started.resident_prompt_tokens(), 0);
}

TEST_F(ServeTest, BadInputsGetTheirCodeAndTheServerKeepsServing) {
  auto expect_code = [&](v1::GenerateRequest request, grpc::StatusCode code, const std::string& words) {
    GenerateOutcome out = RunGenerate(*stub_, request);
    EXPECT_EQ(out.status.error_code(), code) << out.status.error_message();
    EXPECT_THAT(out.status.error_message(), HasSubstr(words));
    EXPECT_FALSE(out.has_finished);
  };
  const std::vector<int32_t> ok_prompt = PromptIds(1, 20);
  expect_code(GreedyRequest(ok_prompt, 4, "int4(g=32)/lru", ""), grpc::StatusCode::INVALID_ARGUMENT, "position");
  expect_code(GreedyRequest({}, 4, "", ""), grpc::StatusCode::INVALID_ARGUMENT, "empty");
  expect_code(GreedyRequest(PromptIds(2, 1025), 4, "", ""), grpc::StatusCode::INVALID_ARGUMENT, "context");
  expect_code(GreedyRequest({5, 4096, 7}, 4, "", ""), grpc::StatusCode::INVALID_ARGUMENT, "vocabulary");
  expect_code(GreedyRequest({5, -1}, 4, "", ""), grpc::StatusCode::INVALID_ARGUMENT, "vocabulary");
  v1::GenerateRequest bad = GreedyRequest(ok_prompt, 4, "", "");
  bad.mutable_sampling()->set_temperature(-1);
  expect_code(bad, grpc::StatusCode::INVALID_ARGUMENT, "temperature");
  bad = GreedyRequest(ok_prompt, 4, "", "");
  bad.mutable_sampling()->set_top_p(0);
  expect_code(bad, grpc::StatusCode::INVALID_ARGUMENT, "top_p");
  bad = GreedyRequest(ok_prompt, -3, "", "");
  expect_code(bad, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens");
  bad = GreedyRequest(ok_prompt, 4, "", "");
  bad.set_session_id("00000000000000000000000000000000");
  expect_code(bad, grpc::StatusCode::NOT_FOUND, "session");
  bad.set_session_id("not a session id");
  expect_code(bad, grpc::StatusCode::INVALID_ARGUMENT, "session");
  const std::string expiring = OpenSession(*stub_, "", /*idle_timeout_ms=*/1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  bad.set_session_id(expiring);
  expect_code(bad, grpc::StatusCode::NOT_FOUND, "expired");
  const std::string session = OpenSession(*stub_, "int8(g=32)");
  bad.set_session_id(session);
  bad.set_policy("int4(g=32)");
  expect_code(bad, grpc::StatusCode::INVALID_ARGUMENT, "policy");
  EXPECT_EQ(CloseSession(*stub_, "ffffffffffffffffffffffffffffffff").error_code(), grpc::StatusCode::NOT_FOUND);
  // A deadline that passes while the request runs.
  GenerateOutcome late = RunGenerate(*stub_, GreedyRequest(PromptIds(3, 900), 100, "dense", ""), 20);
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  GenerateOutcome good = RunGenerate(*stub_, GreedyRequest(ok_prompt, 4, "", ""));
  EXPECT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_EQ(good.ids.size(), 4u);
  EXPECT_EQ(good.finished.finish_reason(), v1::FINISH_REASON_MAX_TOKENS);
  EXPECT_TRUE(CloseSession(*stub_, session).ok());
  EXPECT_EQ(WaitDrained(*stub_).kv_bytes_in_use(), 0);
}

// --device: a name that is not a device, a quantized format on a GPU and a GPU that is not
// there each end the process with their error before it listens (exit 2 for bad flags, 1
// for a missing device, whether or not this build has CUDA).
TEST(ServeDeviceTest, BadOrMissingDevicesEndWithTheirError) {
  TempDir dir;
  const std::string serve = kBinary + " serve --model " + kModel + " --data " + dir.Sub("d") + " --listen 127.0.0.1:0";
  auto [code, out] = RunCommand(serve + " --device gpu7");
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out, HasSubstr("is not cpu, cuda or cuda:N"));
  std::tie(code, out) = RunCommand(serve + " --device cuda:0 --weights int8");
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out, HasSubstr("bf16"));
  std::tie(code, out) = RunCommand(serve + " --device cuda:99");
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, ::testing::AnyOf(HasSubstr("no CUDA device 99"), HasSubstr("built without CUDA")));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("listening on")));
}

// --span-transport nccl on `kvspan decode`: a worker on the CPU (or a build without CUDA
// and NCCL) cannot have it and ends with FailedPrecondition's exit 1 before it listens; a
// name that is not a transport is a bad flag (exit 2).
TEST(ServeDeviceTest, NcclSpanTransportWithoutItsGpuEndsAtStartUp) {
  TempDir dir;
  const std::string decode = kBinary + " decode --model " + kModel + " --data " + dir.Sub("d") + " --listen 127.0.0.1:0";
  auto [code, out] = RunCommand(decode + " --span-transport nccl");
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, ::testing::AnyOf(HasSubstr("needs --device cuda:N"), HasSubstr("built without CUDA and NCCL")));
  EXPECT_THAT(out, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("listening on")));
  std::tie(code, out) = RunCommand(decode + " --span-transport tcp");
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out, HasSubstr("is not grpc or nccl"));
}

TEST(ServeLimitsTest, BudgetAndQueueLimitsAreResourceExhausted) {
  TempDir dir;
  {
    // 200 KB of KV: 1000 dense tokens (2 KiB each) can never fit.
    ServeProcess server(kBinary, ServeArgs(dir.Sub("a"), {"--kv-budget-bytes", "200000"}));
    ASSERT_FALSE(server.address().empty());
    auto stub = server.NewStub();
    GenerateOutcome out = RunGenerate(*stub, GreedyRequest(PromptIds(1, 900), 100, "dense", ""));
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(out.status.error_message(), HasSubstr("KV budget"));
    GenerateOutcome small = RunGenerate(*stub, GreedyRequest(PromptIds(1, 20), 4, "dense", ""));
    EXPECT_TRUE(small.status.ok()) << small.status.error_message();
  }
  {
    ServeProcess server(kBinary, ServeArgs(dir.Sub("b"), {"--max-queue", "0"}));
    ASSERT_FALSE(server.address().empty());
    auto stub = server.NewStub();
    GenerateOutcome out = RunGenerate(*stub, GreedyRequest(PromptIds(1, 20), 4, "", ""));
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(out.status.error_message(), HasSubstr("queue"));
  }
}

TEST(ServePreemptionTest, SequencesPastTheBudgetArePreemptedAndResumeWithTheSameOutput) {
  TempDir dir;
  // Room for a few int4 sequences of ~700 tokens, not for eight at once.
  ServeProcess server(kBinary, ServeArgs(dir.Sub("data"), {"--kv-budget-bytes", "1500000"}));
  ASSERT_FALSE(server.address().empty());
  constexpr int kClients = 8;
  std::vector<std::vector<int32_t>> alone(kClients);
  {
    auto stub = server.NewStub();
    for (int i = 0; i < kClients; ++i) {
      GenerateOutcome out = RunGenerate(*stub, GreedyRequest(PromptIds(300 + i, 500), 120, "int4(g=32)", "alone"));
      ASSERT_TRUE(out.status.ok()) << out.status.error_message();
      alone[i] = out.ids;
    }
  }
  std::vector<GenerateOutcome> together(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto stub = server.NewStub();
      together[i] = RunGenerate(*stub, GreedyRequest(PromptIds(300 + i, 500), 120, "int4(g=32)", "together"));
    });
  }
  for (auto& t : threads) t.join();
  int preempted = 0;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, alone[i]) << "request " << i;
    preempted += together[i].finished.preemptions();
  }
  EXPECT_GT(preempted, 0) << "the budget was meant to force preemption";
  auto stub = server.NewStub();
  EXPECT_EQ(WaitDrained(*stub).kv_bytes_in_use(), 0);
}

TEST_F(ServeTest, SixteenClientsFiveTurnsEachThenMemoryReturnsToZero) {
  constexpr int kClients = 16, kTurns = 5;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = server_->NewStub();
      const std::string session = OpenSession(*stub, c % 2 == 0 ? "int4(g=32)" : "dense");
      for (int t = 0; t < kTurns; ++t) {
        v1::GenerateRequest r = GreedyRequest(PromptIds(1000 * c + t, 12 + c), 8, "", "");
        r.set_session_id(session);
        GenerateOutcome out = RunGenerate(*stub, r);
        if (!out.status.ok() || out.ids.size() != 8u) ++failures;
        if (t > 0 && out.started.resident_prompt_tokens() + out.started.store_prompt_tokens() == 0 &&
            c % 2 == 0 && out.started.prompt_tokens() > kSpan) {
          ++failures;  // a compressed session's history was recomputed
        }
      }
      if (!CloseSession(*stub, session).ok()) ++failures;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  const v1::ServerInfoResponse info = WaitDrained(*stub_);
  EXPECT_EQ(info.kv_bytes_in_use(), 0);
  EXPECT_EQ(info.resident_sessions(), 0);
}

TEST_F(ServeTest, CancellingMidStreamFreesTheSequence) {
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyRequest(PromptIds(5, 100), 500, "int4(g=32)", ""));
  v1::GenerateResponse response;
  int tokens = 0;
  while (reader->Read(&response)) {
    if (response.has_tokens() && ++tokens == 3) {
      const v1::ServerInfoResponse busy = ServerInfo(*stub_);
      EXPECT_EQ(busy.running_sequences(), 1);
      EXPECT_GT(busy.kv_bytes_in_use(), 0);
      context.TryCancel();
    }
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  const v1::ServerInfoResponse info = WaitDrained(*stub_);
  EXPECT_EQ(info.running_sequences(), 0);
  EXPECT_EQ(info.kv_bytes_in_use(), 0);
}

TEST_F(ServeTest, SigtermFinishesInFlightStreamsThenExitsZero) {
  GenerateOutcome out;
  std::thread client([&] {
    auto stub = server_->NewStub();
    out = RunGenerate(*stub, GreedyRequest(PromptIds(8, 50), 60, "int4(g=32)", ""));
  });
  // Let the stream start, then ask the server to stop.
  for (int i = 0; i < 100 && ServerInfo(*stub_).running_sequences() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stub_.reset();
  EXPECT_EQ(server_->Stop(SIGTERM), 0);
  client.join();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids.size(), 60u);
}

TEST_F(ServeTest, SigkillDuringTrafficLosesNoAcknowledgedPrefixOrSession) {
  const std::vector<int32_t> prefix = PromptIds(40, 4 * kSpan + 3);
  const int64_t puts = StorePutsOk(*stub_);
  GenerateOutcome first = RunGenerate(*stub_, GreedyRequest(prefix, 8, "int4(g=32)", "crash"));
  ASSERT_TRUE(first.status.ok());
  ASSERT_GE(WaitForStorePuts(*stub_, puts + 4), puts + 4) << "acknowledged by the store before the kill";
  const std::string session = OpenSession(*stub_, "int4(g=32)");
  v1::GenerateRequest turn = GreedyRequest(PromptIds(41, 2 * kSpan), 10, "", "");
  turn.set_session_id(session);
  GenerateOutcome t1 = RunGenerate(*stub_, turn);
  ASSERT_TRUE(t1.status.ok());
  // Traffic in flight when the server dies.
  std::vector<std::thread> traffic;
  for (int i = 0; i < 4; ++i) {
    traffic.emplace_back([&, i] {
      auto stub = server_->NewStub();
      RunGenerate(*stub, GreedyRequest(PromptIds(50 + i, 300), 200, "int4(g=32)", "crash"));
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stub_.reset();
  EXPECT_EQ(server_->Stop(SIGKILL), -SIGKILL);
  for (auto& t : traffic) t.join();
  server_ = std::make_unique<ServeProcess>(kBinary, ServeArgs(dir_.Sub("data")));
  ASSERT_FALSE(server_->address().empty()) << "no restart on the same data";
  stub_ = server_->NewStub();
  GenerateOutcome again = RunGenerate(*stub_, GreedyRequest(prefix, 8, "int4(g=32)", "crash"));
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.started.store_prompt_tokens(), 4 * kSpan);
  EXPECT_EQ(again.ids, first.ids);
  v1::GenerateRequest t2 = GreedyRequest(PromptIds(42, 5), 4, "", "");
  t2.set_session_id(session);
  GenerateOutcome o2 = RunGenerate(*stub_, t2);
  ASSERT_TRUE(o2.status.ok()) << o2.status.error_message();
  EXPECT_EQ(o2.started.prompt_tokens(), 2 * kSpan + 10 + 5);
  EXPECT_EQ(o2.started.store_prompt_tokens(), 2 * kSpan);
}

}  // namespace
}  // namespace kvspan::tests
