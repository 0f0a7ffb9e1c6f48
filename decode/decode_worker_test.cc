// DecodeWorker in-process over the shipped model and a real embedded cache store:
// concurrent submitters (label tsan), batch invariance, cancellation, max_tokens 0,
// admission errors. Built twice: over the CPU backend (decode_worker_test), and with
// KVSPAN_DECODE_TEST_GPU over gpu::GpuBackend (gpu/CMakeLists.txt: in the CPU emulator,
// decode_worker_gpu_emulated_test, in CI; on a device, decode_worker_gpu_test), where the
// same scheduler tests run on the GPU's caches and the GPU's tokens are checked against
// the CPU's.
#include "decode/decode_worker.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "cachestore/embedded_client.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#ifndef KVSPAN_DECODE_TEST_GPU
#define KVSPAN_DECODE_TEST_GPU 0
#endif
#if KVSPAN_DECODE_TEST_GPU
#include "gpu/gpu_backend.h"
#include "kernels/cuda/device_memory.h"
#endif

namespace kvspan::decode {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

const std::string kModel = std::string(KVSPAN_SOURCE_DIR) + "/models/kvspan-brown";

// Records what the worker streamed; Wait() blocks until the end.
class RecordingSink final : public TokenSink {
 public:
  void OnStarted(const SequenceStarted& s) override {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = s;
  }
  void OnTokens(absl::Span<const int32_t> ids, absl::string_view text) override {
    std::lock_guard<std::mutex> lock(mu_);
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    if (cancel_after_ > 0 && static_cast<int>(ids_.size()) >= cancel_after_) cancelled_ = true;
  }
  void OnFinished(const SequenceFinished& f) override {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = f;
    end_ = absl::OkStatus();
    cv_.notify_all();
  }
  void OnError(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    end_ = status;
    cv_.notify_all();
  }
  void OnSpan(int index, const kvcache::Span& span) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(index, static_cast<int>(spans_.size()));
    spans_.push_back(span);
  }
  void OnPrefilled(SequencePrefilled p) override {
    std::lock_guard<std::mutex> lock(mu_);
    prefilled_ = std::move(p);
    end_ = absl::OkStatus();
    cv_.notify_all();
  }
  bool cancelled() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  std::vector<kvcache::Span> spans() const {
    std::lock_guard<std::mutex> lock(mu_);
    return spans_;
  }
  std::optional<SequencePrefilled> prefilled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return prefilled_;
  }
  void CancelAfter(int tokens) { cancel_after_ = tokens; }
  absl::Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return end_.has_value(); });
    return *end_;
  }
  std::vector<int32_t> ids() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ids_;
  }
  SequenceFinished finished() const {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  SequenceStarted started_;
  SequenceFinished finished_;
  std::vector<int32_t> ids_;
  std::vector<kvcache::Span> spans_;
  std::optional<SequencePrefilled> prefilled_;
  std::optional<absl::Status> end_;
  bool cancelled_ = false;
  int cancel_after_ = 0;
};

class DecodeWorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One thread: OpenBLAS's own threads are invisible to ThreadSanitizer (its writes would
    // show as races); the concurrency under test is the scheduler's against its callers.
    model_ = model::Model::Load(kModel, {.num_threads = 1}).value().release();
    tokenizer_ = model::Tokenizer::LoadFromDir(kModel).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
  }
  void SetUp() override {
#if KVSPAN_DECODE_TEST_GPU
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
#endif
    cachestore::StoreOptions so;
    so.path = dir_.Sub("store");
    auto store = cachestore::CacheStore::Open(so);
    ASSERT_OK(store.status());
    prefill::StoreRouterOptions ro;
    ro.client = std::make_shared<cachestore::EmbeddedCacheClient>(std::shared_ptr<cachestore::CacheStore>(std::move(*store)));
    ro.model_fingerprint = model_->config().fingerprint;
    ro.geometry = {model_->config().num_layers, model_->config().num_kv_heads, model_->config().head_dim, 64};
    router_ = std::make_shared<prefill::StoreRouter>(ro);
  }
  // A worker over the backend under test.
  std::unique_ptr<DecodeWorker> NewWorker(DecodeWorkerOptions options = {}) {
#if KVSPAN_DECODE_TEST_GPU
    return std::make_unique<DecodeWorker>(gpu::GpuBackend::Load(kModel, {}).value(), tokenizer_, router_, options);
#else
    return std::make_unique<DecodeWorker>(model_, tokenizer_, router_, options);
#endif
  }
  // A worker over the CPU model, whatever the backend under test.
  std::unique_ptr<DecodeWorker> NewCpuWorker() {
    return std::make_unique<DecodeWorker>(model_, tokenizer_, router_, DecodeWorkerOptions{});
  }
  SequenceHandoff Handoff(const std::string& policy, std::vector<int32_t> tokens, int max_tokens,
                          std::shared_ptr<TokenSink> sink) {
    SequenceHandoff h;
    h.request_id = "r";
    h.policy = kvcache::CachePolicy::Resolve(policy, model_->config(), 64).value();
    h.tokens = std::move(tokens);
    h.generation.sampling.temperature = 0;
    h.generation.max_tokens = max_tokens;
    h.generation.ignore_eos = true;
    h.sink = std::move(sink);
    return h;
  }
  static std::vector<int32_t> Prompt(int seed, int n) {
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = 3 + (seed * 7919 + i * 104729) % 4000;
    return ids;
  }

  static model::Model* model_;
  static model::Tokenizer* tokenizer_;
  kvspan::testing::TempDir dir_;
  std::shared_ptr<prefill::StoreRouter> router_;
};
model::Model* DecodeWorkerTest::model_ = nullptr;
model::Tokenizer* DecodeWorkerTest::tokenizer_ = nullptr;

TEST_F(DecodeWorkerTest, ConcurrentSubmittersGetTheirSoloOutputs) {
  auto worker = NewWorker();
  constexpr int kSequences = KVSPAN_DECODE_TEST_GPU ? 4 : 6;  // the emulator is slow
  std::vector<std::vector<int32_t>> solo(kSequences);
  for (int i = 0; i < kSequences; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    ASSERT_OK(worker->Submit(Handoff(i % 2 ? "dense" : "int4(g=32)", Prompt(i, 70 + 5 * i), 6, sink)));
    ASSERT_OK(sink->Wait());
    solo[i] = sink->ids();
  }
  std::vector<std::shared_ptr<RecordingSink>> sinks(kSequences);
  std::vector<std::thread> threads;
  for (int i = 0; i < kSequences; ++i) {
    sinks[i] = std::make_shared<RecordingSink>();
    threads.emplace_back([&, i] {
      ASSERT_OK(worker->Submit(Handoff(i % 2 ? "dense" : "int4(g=32)", Prompt(i, 70 + 5 * i), 6, sinks[i])));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kSequences; ++i) {
    ASSERT_OK(sinks[i]->Wait());
    EXPECT_EQ(sinks[i]->ids(), solo[i]) << "sequence " << i;
    EXPECT_GT(sinks[i]->finished().kv_bytes, 0);
  }
  worker->WaitIdle();
  EXPECT_EQ(worker->Stats().kv_bytes_in_use, 0);
}

TEST_F(DecodeWorkerTest, CancelledSequenceEndsCancelledAndFreesItsMemory) {
  auto worker = NewWorker();
  auto sink = std::make_shared<RecordingSink>();
  sink->CancelAfter(2);
  ASSERT_OK(worker->Submit(Handoff("int4(g=32)", Prompt(1, 30), 200, sink)));
  EXPECT_THAT(sink->Wait(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_LT(sink->ids().size(), 200u);
  worker->WaitIdle();
  EXPECT_EQ(worker->Stats().running, 0);
  EXPECT_EQ(worker->Stats().kv_bytes_in_use, 0);
}

TEST_F(DecodeWorkerTest, MaxTokensZeroPrefillsAndStoresTheSpans) {
  auto worker = NewWorker();
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_OK(worker->Submit(Handoff("int8(g=32)", Prompt(2, 3 * 64 + 1), 0, sink)));
  ASSERT_OK(sink->Wait());
  EXPECT_TRUE(sink->ids().empty());
  EXPECT_EQ(sink->finished().finish_reason, model::FinishReason::kMaxTokens);
  router_->FlushAll();
  auto policy = kvcache::CachePolicy::Resolve("int8(g=32)", model_->config(), 64).value();
  prefill::LoadedPrefix loaded = router_->For(*policy, "")->LoadPrefix(Prompt(2, 3 * 64 + 1), 3);
  EXPECT_EQ(loaded.spans.size(), 3u);
}

// The disaggregated path in one process: worker A prefills only (spans reported in order,
// then the dense rows and logits), worker B continues the shipped sequence without
// computing its prompt: the same greedy tokens as one worker doing both, for a compressed
// and the dense policy.
TEST_F(DecodeWorkerTest, PrefillOnlyThenShippedGivesTheSameTokens) {
  auto prefiller = NewWorker();
  auto decoder = NewWorker();
  constexpr int kSpans = KVSPAN_DECODE_TEST_GPU ? 2 : 3;  // the emulator is slow
  for (const char* policy : {"int4(g=32)", "dense"}) {
    SCOPED_TRACE(policy);
    const std::vector<int32_t> prompt = Prompt(5, kSpans * 64 + 17);
    auto whole = std::make_shared<RecordingSink>();
    ASSERT_OK(decoder->Submit(Handoff(policy, prompt, 8, whole)));
    ASSERT_OK(whole->Wait());

    auto p = std::make_shared<RecordingSink>();
    SequenceHandoff h = Handoff(policy, prompt, 8, p);
    h.prefill_only = true;
    ASSERT_OK(prefiller->Submit(std::move(h)));
    ASSERT_OK(p->Wait());
    ASSERT_TRUE(p->prefilled().has_value());
    const bool dense = std::string(policy) == "dense";
    EXPECT_EQ(p->spans().size(), dense ? 0u : static_cast<size_t>(kSpans));
    EXPECT_EQ(p->prefilled()->rows.num_tokens, dense ? kSpans * 64 + 17 : 17);
    EXPECT_TRUE(p->ids().empty());

    auto d = std::make_shared<RecordingSink>();
    SequenceHandoff shipped = Handoff(policy, prompt, 8, d);
    shipped.prefix = p->spans();
    shipped.shipped.emplace();
    shipped.shipped->rows = p->prefilled()->rows;
    shipped.shipped->logits = p->prefilled()->logits;
    ASSERT_OK(decoder->Submit(std::move(shipped)));
    ASSERT_OK(d->Wait());
    EXPECT_EQ(d->ids(), whole->ids());

    // A shipped sequence that does not cover its prompt is refused before admission.
    SequenceHandoff short_rows = Handoff(policy, prompt, 8, d);
    short_rows.shipped.emplace();
    short_rows.shipped->logits = p->prefilled()->logits;
    EXPECT_THAT(decoder->Submit(std::move(short_rows)), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  prefiller->WaitIdle();
  EXPECT_EQ(prefiller->Stats().kv_bytes_in_use, 0);
}

TEST_F(DecodeWorkerTest, ReserveWaitsForBudgetAndRefusesWhatNeverFits) {
  DecodeWorkerOptions o;
  o.kv_budget_bytes = 4 << 20;
  auto worker = NewWorker(o);
  const auto far = Clock::now() + std::chrono::seconds(30);
  EXPECT_THAT(worker->Reserve(o.kv_budget_bytes + 1, far, nullptr), StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK(worker->Reserve(3 << 20, far, nullptr));
  // 3 MiB reserved: another 3 MiB waits until its deadline.
  EXPECT_THAT(worker->Reserve(3 << 20, Clock::now() + std::chrono::milliseconds(100), nullptr),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(worker->Reserve(3 << 20, far, [] { return true; }), StatusIs(absl::StatusCode::kCancelled));
  worker->Unreserve(3 << 20);
  ASSERT_OK(worker->Reserve(3 << 20, far, nullptr));
  worker->Unreserve(3 << 20);
}

TEST_F(DecodeWorkerTest, AdmissionErrorsAreReturnedAndTheSinkIsNotCalled) {
  DecodeWorkerOptions o;
  o.kv_budget_bytes = 100000;
  auto worker = NewWorker(o);
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THAT(worker->Submit(Handoff("dense", Prompt(3, 500), 100, sink)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("KV budget")));
  EXPECT_THAT(worker->Submit(Handoff("dense", {}, 1, sink)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(worker->Submit(Handoff("dense", Prompt(3, 1025), 1, sink)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("context")));
  SequenceHandoff bad = Handoff("dense", Prompt(3, 5), 1, sink);
  bad.generation.sampling.top_p = 2;
  EXPECT_THAT(worker->Submit(std::move(bad)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_p")));
  // Still serving.
  ASSERT_OK(worker->Submit(Handoff("dense", Prompt(3, 5), 2, sink)));
  ASSERT_OK(sink->Wait());
  EXPECT_EQ(sink->ids().size(), 2u);
}

TEST_F(DecodeWorkerTest, BackendNamesWhereItRuns) {
  auto worker = NewWorker();
#if KVSPAN_DECODE_TEST_GPU
  EXPECT_THAT(worker->backend().name(), HasSubstr("cuda:0"));
#else
  EXPECT_EQ(worker->backend().name(), "cpu");
  EXPECT_FALSE(worker->backend().samples_tokens());
#endif
  EXPECT_EQ(worker->backend().config().fingerprint, model_->config().fingerprint);
}

#if KVSPAN_DECODE_TEST_GPU
// The GPU worker's greedy tokens are the CPU worker's, for the dense cache and for policies
// whose spans are encoded on the device and on the host, with prompts that end mid-span and
// sequences batched together; and a second turn that shares a prefix loads its spans from
// the store (on the GPU, from the spans the GPU put there) and still matches.
TEST_F(DecodeWorkerTest, GpuTokensAreTheCpuTokens) {
  auto gpu = NewWorker();
  auto cpu = NewCpuWorker();
  for (const char* policy : {"dense", "int4(g=32)", "keynorm(keep=0.5)/int8"}) {
    SCOPED_TRACE(policy);
    std::vector<std::shared_ptr<RecordingSink>> on_gpu, on_cpu;
    for (int i = 0; i < 2; ++i) {
      on_gpu.push_back(std::make_shared<RecordingSink>());
      on_cpu.push_back(std::make_shared<RecordingSink>());
      ASSERT_OK(gpu->Submit(Handoff(policy, Prompt(20 + i, 64 * (i + 1) + 9), 6, on_gpu.back())));
    }
    for (int i = 0; i < 2; ++i) {
      ASSERT_OK(on_gpu[i]->Wait());
      ASSERT_OK(cpu->Submit(Handoff(policy, Prompt(20 + i, 64 * (i + 1) + 9), 6, on_cpu[i])));
      ASSERT_OK(on_cpu[i]->Wait());
      EXPECT_EQ(on_gpu[i]->ids().size(), 6u);
      EXPECT_EQ(on_gpu[i]->ids(), on_cpu[i]->ids()) << "sequence " << i;
    }
    if (std::string(policy) != "int4(g=32)") continue;
    // A longer prompt that shares the second one's first two spans: they are the store's now
    // (put by the GPU worker), and the GPU starts from them (uploaded, not recomputed).
    router_->FlushAll();
    std::vector<int32_t> longer = Prompt(21, 2 * 64 + 9);
    longer.resize(2 * 64 + 30, 7);
    auto h = kvcache::CachePolicy::Resolve(policy, model_->config(), 64).value();
    prefill::LoadedPrefix loaded = router_->For(*h, "")->LoadPrefix(longer, 2);
    ASSERT_EQ(loaded.spans.size(), 2u);
    auto warm = std::make_shared<RecordingSink>();
    SequenceHandoff handoff = Handoff(policy, longer, 6, warm);
    handoff.prefix = std::move(loaded.spans);
    ASSERT_OK(gpu->Submit(std::move(handoff)));
    ASSERT_OK(warm->Wait());
    EXPECT_EQ(warm->finished().cached_prompt_tokens, 2 * 64);
    auto reference = std::make_shared<RecordingSink>();
    ASSERT_OK(cpu->Submit(Handoff(policy, longer, 6, reference)));
    ASSERT_OK(reference->Wait());
    EXPECT_EQ(warm->ids(), reference->ids());
  }
  gpu->WaitIdle();
  EXPECT_EQ(gpu->Stats().kv_bytes_in_use, 0);
}

// Sampling on the device (temperature, top-k, top-p; the sequence's draws from its seeded
// stream): the same tokens as the same GPU backend returning its logits for the host to
// sample, both workers running at once with sampled and greedy sequences batched together.
// (Not against the CPU worker: a sampled token depends on the order of near-equal logits in
// the distribution's tail, which the CPU's and the GPU's float sums may swap.)
TEST_F(DecodeWorkerTest, GpuSamplesOnTheDeviceWhatTheHostSamples) {
  auto device = NewWorker();
  ASSERT_TRUE(device->backend().samples_tokens());
  DecodeWorker host(gpu::GpuBackend::Load(kModel, {}, {.sample_on_device = false}).value(), tokenizer_, router_, {});
  ASSERT_FALSE(host.backend().samples_tokens());
  struct Case {
    double temperature;
    int top_k;
    double top_p;
  };
  const std::vector<Case> cases = {{0.8, 0, 1.0}, {1.0, 40, 0.9}, {1.3, 0, 0.5}, {0, 0, 1.0}};
  auto handoff = [&](size_t i, uint64_t seed, std::shared_ptr<RecordingSink> sink) {
    SequenceHandoff h = Handoff("int8(g=32)", Prompt(40 + static_cast<int>(i), 40), 6, std::move(sink));
    h.generation.sampling = {.temperature = cases[i].temperature, .top_k = cases[i].top_k,
                             .top_p = cases[i].top_p, .seed = seed};
    return h;
  };
  std::vector<std::shared_ptr<RecordingSink>> on_device, on_host;
  for (size_t i = 0; i < cases.size(); ++i) {
    on_device.push_back(std::make_shared<RecordingSink>());
    on_host.push_back(std::make_shared<RecordingSink>());
    ASSERT_OK(device->Submit(handoff(i, 1000 + i, on_device.back())));
    ASSERT_OK(host.Submit(handoff(i, 1000 + i, on_host.back())));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_OK(on_device[i]->Wait());
    ASSERT_OK(on_host[i]->Wait());
    EXPECT_EQ(on_device[i]->ids().size(), 6u);
    EXPECT_EQ(on_device[i]->ids(), on_host[i]->ids()) << "case " << i;
  }
  // The draws matter: another seed samples other tokens (so the comparison can fail).
  auto other = std::make_shared<RecordingSink>();
  ASSERT_OK(device->Submit(handoff(0, 77, other)));
  ASSERT_OK(other->Wait());
  EXPECT_NE(other->ids(), on_device[0]->ids());
}

TEST_F(DecodeWorkerTest, GpuRefusesQueryAwarePoliciesAtAdmission) {
  auto worker = NewWorker();
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THAT(worker->Submit(Handoff("snapkv(keep=0.5,obs=8)/bf16", Prompt(1, 100), 4, sink)),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("query-aware")));
  ASSERT_OK(worker->Submit(Handoff("int8(g=32)", Prompt(1, 100), 2, sink)));  // still serving
  ASSERT_OK(sink->Wait());
}

TEST_F(DecodeWorkerTest, GpuKvBudgetComesFromDeviceMemory) {
  auto backend = gpu::GpuBackend::Load(kModel, {}).value();
  const kernels::CudaMemoryInfo info = kernels::CudaMemGetInfo().value();
  // (The emulated device is the host, whose memory in use is whatever the machine runs:
  // the fractions are chosen above it.)
  const double used = static_cast<double>(info.total_bytes - info.free_bytes) / info.total_bytes;
  ASSERT_LT(used, 0.9) << "the machine has too little memory free for this test";
  ASSERT_OK_AND_ASSIGN(int64_t budget, backend->KvBudgetBytes(1.0, 512));
  EXPECT_GT(budget, 0);
  // No more than the device less what is in use and the step's scratch (64 MiB of slack for
  // what others allocate meanwhile).
  EXPECT_LE(budget, info.free_bytes - backend->model().StepScratchBytes(512, 512) + (int64_t{64} << 20));
  ASSERT_OK_AND_ASSIGN(int64_t part, backend->KvBudgetBytes((1.0 + used) / 2, 512));
  EXPECT_LT(part, budget);
  EXPECT_THAT(backend->KvBudgetBytes(0, 512), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(backend->KvBudgetBytes(1.5, 512), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(backend->KvBudgetBytes(0.9, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(backend->KvBudgetBytes(1e-9, 512), StatusIs(absl::StatusCode::kResourceExhausted));
}
#endif  // KVSPAN_DECODE_TEST_GPU

}  // namespace
}  // namespace kvspan::decode
