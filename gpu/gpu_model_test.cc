// GpuModel against the CPU Model on the shipped kvspan-brown (a bf16 checkpoint, so both
// hold the same weights exactly): prefill, batched decode of sequences of different
// lengths, logits of every token, and the error paths; and CreateRandom's models (random
// weights made on the device, for the benchmarks). Built twice (gpu/CMakeLists.txt):
// gpu_model_emulated_test runs the kernels in the CPU emulator (CI), gpu_model_test on a
// GPU (skips without one).
#include "gpu/gpu_model.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <cmath>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cuda/device_memory.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/policy.h"
#include "kvcache/span_compressor.h"
#include "model/model.h"
#include "model/sampler.h"

namespace kvspan::gpu {
namespace {

using ::kvspan::testing::StatusIs;

constexpr char kModelDir[] = "models/kvspan-brown";

int ArgMax(const std::vector<float>& row, int offset, int n) {
  return static_cast<int>(std::max_element(row.begin() + offset, row.begin() + offset + n) - row.begin() - offset);
}

// The bound: both are fp32 over identical bf16 weights and differ only in the order of
// their sums (the GPU's plain GEMM sums in k order, the CPU's tiled kernels in blocks;
// softmax and RMSNorm reductions likewise), about 1e-6 relative per op through 4 layers:
// 2e-4 of the row's largest logit leaves two orders of margin, where a wrong RoPE, mask,
// norm or cache slot moves logits by O(1). cuBLASLt rounds activations to bf16 (2^-8
// relative per element): its bound is 3e-2 of the largest logit and the same top-1.
void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, int vocab, double rel,
                 const std::string& where) {
  ASSERT_EQ(gpu.size(), cpu.size()) << where;
  for (size_t row = 0; row * vocab < cpu.size(); ++row) {
    float max_abs = 0.0f;
    for (int j = 0; j < vocab; ++j) max_abs = std::max(max_abs, std::fabs(cpu[row * vocab + j]));
    for (int j = 0; j < vocab; ++j) {
      ASSERT_LE(std::fabs(gpu[row * vocab + j] - cpu[row * vocab + j]), rel * max_abs)
          << where << " row " << row << " token " << j;
    }
    EXPECT_EQ(ArgMax(gpu, row * vocab, vocab), ArgMax(cpu, row * vocab, vocab)) << where << " row " << row;
  }
}

class GpuModelTest : public ::testing::TestWithParam<GpuGemm> {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    auto gpu = GpuModel::Load(kModelDir, {.device = 0, .gemm = GetParam()});
    if (gpu.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << gpu.status().message();
    ASSERT_OK(gpu.status());
    gpu_ = std::move(*gpu);
    auto cpu = model::Model::Load(kModelDir, {.num_threads = 2});
    ASSERT_OK(cpu.status());
    cpu_ = std::move(*cpu);
    rel_ = gpu_->gemm_name() == "cublaslt" ? 3e-2 : 2e-4;
  }
  std::unique_ptr<GpuModel> gpu_;
  std::unique_ptr<model::Model> cpu_;
  double rel_ = 0;
};

TEST_P(GpuModelTest, PrefillAndBatchedDecodeMatchTheCpuModel) {
  const int vocab = gpu_->config().vocab_size;
  EXPECT_EQ(gpu_->config().fingerprint, cpu_->config().fingerprint) << "a bf16 checkpoint is exact in bf16";
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 300, 42, 9, 1000, 77, 3, 250, 11, 64},
                                                      {8, 4000, 12, 13}};
  std::vector<std::unique_ptr<GpuKvCache>> gpu_caches;
  std::vector<std::unique_ptr<model::DenseKvCache>> cpu_caches;
  std::vector<int32_t> next(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) {
    ASSERT_OK_AND_ASSIGN(auto gc, gpu_->NewCache(64));
    ASSERT_OK_AND_ASSIGN(auto cc, cpu_->NewDenseCache(64));
    std::vector<float> gl, cl;
    GpuForwardItem gi{.tokens = prompts[s], .cache = gc.get(), .logits_mode = model::LogitsMode::kAllTokens,
                      .logits = &gl};
    model::ForwardItem ci{.tokens = prompts[s], .cache = cc.get(), .logits_mode = model::LogitsMode::kAllTokens,
                          .logits = &cl};
    ASSERT_OK(gpu_->Forward(absl::MakeSpan(&gi, 1)));
    ASSERT_OK(cpu_->Forward(absl::MakeSpan(&ci, 1)));
    ExpectClose(gl, cl, vocab, rel_, "prefill " + std::to_string(s));
    EXPECT_EQ(gc->num_tokens(), static_cast<int>(prompts[s].size()));
    next[s] = ArgMax(cl, (prompts[s].size() - 1) * vocab, vocab);
    gpu_caches.push_back(std::move(gc));
    cpu_caches.push_back(std::move(cc));
  }
  // Greedy decode of both sequences in one batch (ragged lengths), against the CPU's batch.
  for (int step = 0; step < 4; ++step) {
    std::vector<std::vector<float>> gl(prompts.size()), cl(prompts.size());
    std::vector<GpuForwardItem> gb;
    std::vector<model::ForwardItem> cb;
    for (size_t s = 0; s < prompts.size(); ++s) {
      gb.push_back({.tokens = absl::MakeConstSpan(&next[s], 1), .cache = gpu_caches[s].get(), .logits = &gl[s]});
      cb.push_back({.tokens = absl::MakeConstSpan(&next[s], 1), .cache = cpu_caches[s].get(), .logits = &cl[s]});
    }
    ASSERT_OK(gpu_->Forward(absl::MakeSpan(gb)));
    ASSERT_OK(cpu_->Forward(absl::MakeSpan(cb)));
    for (size_t s = 0; s < prompts.size(); ++s) {
      ExpectClose(gl[s], cl[s], vocab, rel_, "decode step " + std::to_string(step) + " seq " + std::to_string(s));
      next[s] = ArgMax(cl[s], 0, vocab);
    }
  }
}

TEST_P(GpuModelTest, BadInputIsRejectedAndNoCacheChanges) {
  ASSERT_OK_AND_ASSIGN(auto cache, gpu_->NewCache(8));
  std::vector<float> logits;
  const std::vector<int32_t> bad = {1, gpu_->config().vocab_size};
  GpuForwardItem item{.tokens = bad, .cache = cache.get(), .logits = &logits};
  EXPECT_THAT(gpu_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<int32_t> nine(9, 5);  // one more than the cache holds
  item.tokens = nine;
  EXPECT_THAT(gpu_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(cache->num_tokens(), 0);
  std::vector<GpuForwardItem> twice = {item, item};
  twice[0].tokens = twice[1].tokens = absl::MakeConstSpan(nine.data(), 2);
  EXPECT_THAT(gpu_->Forward(absl::MakeSpan(twice)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(gpu_->Forward({}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(gpu_->NewCache(0), StatusIs(absl::StatusCode::kInvalidArgument));
  // The cache still serves after the rejections.
  item.tokens = absl::MakeConstSpan(nine.data(), 3);
  ASSERT_OK(gpu_->Forward(absl::MakeSpan(&item, 1)));
  EXPECT_EQ(cache->num_tokens(), 3);
}

// The device sample over a step's last-token logits is model::SampleWithUniform over the
// logits the same step returns. One batch holds items that ask for both, one that asks for
// the token only and a kAllTokens item without a sample (so the logits rows are reordered:
// sampled items first); a second batch, identical but for the token-only item also asking
// for logits, runs on its own caches: the same kernels on the same inputs give the same
// logits bit for bit, so it shows the logits the first batch sampled from. Exact equality:
// only a u within sampling_cuda.h's eps (4096 · (2^-51 + 2^-50) ≈ 5e-12 at vocab 4096) of a CDF
// boundary could differ, and the seeds are fixed.
TEST_P(GpuModelTest, DeviceSampleIsSampleWithUniformOverTheSameLogits) {
  const int vocab = gpu_->config().vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 300, 42}, {8, 4000, 12}, {9, 1000, 77, 3, 250}, {64, 11}};
  const std::vector<model::SamplingOptions> options = {
      {.temperature = 0},
      {.temperature = 1.0, .top_k = 40, .seed = 1},
      {.temperature = 0.7, .top_p = 0.9, .seed = 2},
      {.temperature = 1.5, .top_k = 100, .top_p = 0.5, .seed = 3}};
  constexpr int kPlain = 1;  // the kAllTokens item, logits only
  constexpr int kTokenOnly = 2;
  std::vector<model::Sampler> samplers;
  std::vector<std::unique_ptr<GpuKvCache>> caches_a, caches_b;
  for (size_t s = 0; s < prompts.size(); ++s) {
    ASSERT_OK_AND_ASSIGN(model::Sampler sampler, model::Sampler::Create(options[s]));
    samplers.push_back(std::move(sampler));
    ASSERT_OK_AND_ASSIGN(auto a, gpu_->NewCache(32));
    ASSERT_OK_AND_ASSIGN(auto b, gpu_->NewCache(32));
    caches_a.push_back(std::move(a));
    caches_b.push_back(std::move(b));
  }
  std::vector<std::vector<int32_t>> tokens = prompts;
  for (int step = 0; step < 3; ++step) {
    const size_t n = prompts.size();
    std::vector<std::vector<float>> logits_a(n), logits_b(n);
    std::vector<int32_t> token_a(n, -1), token_b(n, -1);
    std::vector<GpuDeviceSample> sample_a(n), sample_b(n);
    std::vector<GpuForwardItem> a, b;
    for (size_t s = 0; s < n; ++s) {
      const double u = samplers[s].greedy() ? 0.0 : samplers[s].DrawUniform();
      sample_a[s] = {.options = options[s], .u = u, .token_out = &token_a[s]};
      sample_b[s] = {.options = options[s], .u = u, .token_out = &token_b[s]};
      const bool plain = s == kPlain;
      const auto mode = plain ? model::LogitsMode::kAllTokens : model::LogitsMode::kLastToken;
      a.push_back({.tokens = tokens[s], .cache = caches_a[s].get(), .logits_mode = mode,
                   .logits = s == kTokenOnly ? nullptr : &logits_a[s], .sample = plain ? nullptr : &sample_a[s]});
      b.push_back({.tokens = tokens[s], .cache = caches_b[s].get(), .logits_mode = mode, .logits = &logits_b[s],
                   .sample = plain ? nullptr : &sample_b[s]});
    }
    ASSERT_OK(gpu_->Forward(absl::MakeSpan(a)));
    ASSERT_OK(gpu_->Forward(absl::MakeSpan(b)));
    EXPECT_TRUE(logits_a[kTokenOnly].empty());
    for (size_t s = 0; s < n; ++s) {
      const std::string where = "step " + std::to_string(step) + " item " + std::to_string(s);
      const size_t rows = s == kPlain ? tokens[s].size() : 1;
      ASSERT_EQ(logits_b[s].size(), rows * vocab) << where;
      if (s != kTokenOnly) {
        ASSERT_EQ(logits_a[s], logits_b[s]) << where;
      }
      if (s == kPlain) {
        tokens[s] = {ArgMax(logits_b[s], static_cast<int>(rows - 1) * vocab, vocab)};
        continue;
      }
      EXPECT_EQ(token_a[s], token_b[s]) << where;
      EXPECT_EQ(token_b[s], model::SampleWithUniform(logits_b[s], options[s], sample_b[s].u)) << where;
      tokens[s] = {token_a[s]};
    }
  }
  // Three steps: the prompt, then two sampled tokens.
  EXPECT_EQ(caches_a[0]->num_tokens(), static_cast<int>(prompts[0].size()) + 2);
}

TEST_P(GpuModelTest, BadDeviceSamplesAreRejectedAndNoCacheChanges) {
  ASSERT_OK_AND_ASSIGN(auto cache, gpu_->NewCache(8));
  const std::vector<int32_t> tokens = {5, 17};
  int32_t token = -1;
  std::vector<float> logits;
  auto expect_invalid = [&](GpuForwardItem item, const std::string& what) {
    EXPECT_THAT(gpu_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kInvalidArgument)) << what;
    EXPECT_EQ(cache->num_tokens(), 0) << what;
  };
  const GpuDeviceSample good{.options = {.temperature = 1.0}, .u = 0.5, .token_out = &token};
  expect_invalid({.tokens = tokens, .cache = cache.get()}, "neither logits nor sample");
  expect_invalid({.tokens = tokens, .cache = cache.get(), .logits_mode = model::LogitsMode::kAllTokens,
                  .logits = &logits, .sample = &good},
                 "a sample with kAllTokens");
  std::vector<GpuDeviceSample> bad(6, good);
  bad[0].token_out = nullptr;
  bad[1].options.temperature = -1;
  bad[2].options.top_k = -3;
  bad[3].options.top_p = 0;
  bad[4].u = 1.0;
  bad[5].u = -0.5;
  for (size_t k = 0; k < bad.size(); ++k) {
    expect_invalid({.tokens = tokens, .cache = cache.get(), .sample = &bad[k]}, "bad sample " + std::to_string(k));
  }
  EXPECT_EQ(token, -1);
  // A greedy sample ignores u; the token alone comes back.
  const GpuDeviceSample greedy{.options = {.temperature = 0}, .u = 7.0, .token_out = &token};
  GpuForwardItem item{.tokens = tokens, .cache = cache.get(), .sample = &greedy};
  ASSERT_OK(gpu_->Forward(absl::MakeSpan(&item, 1)));
  EXPECT_EQ(cache->num_tokens(), 2);
  EXPECT_GE(token, 0);
  EXPECT_LT(token, gpu_->config().vocab_size);
}

// Records the spans its inner compressor makes (the GPU cache's), so that the CPU cache can
// attend over the very same spans (ReplayCompressor): the two passes' K/V differ in fp32
// rounding, which can flip a quantization step or an eviction choice, and the comparison
// is of attention over compressed spans, not of that chance.
class RecordingCompressor : public kvcache::SpanCompressor {
 public:
  explicit RecordingCompressor(std::shared_ptr<kvcache::SpanCompressor> inner) : inner_(std::move(inner)) {}
  absl::StatusOr<kvcache::Span> Compress(const kvcache::DenseSpanView& view) override {
    ASSIGN_OR_RETURN(kvcache::Span span, inner_->Compress(view));
    absl::MutexLock lock(&mu_);
    spans_[view.span_index] = span;
    return span;
  }
  absl::StatusOr<kvcache::Span> Recorded(int index) {
    absl::MutexLock lock(&mu_);
    auto it = spans_.find(index);
    if (it == spans_.end()) return absl::NotFoundError(absl::StrCat("no span ", index, " recorded"));
    return it->second;
  }

 private:
  std::shared_ptr<kvcache::SpanCompressor> inner_;
  absl::Mutex mu_;
  std::map<int, kvcache::Span> spans_ ABSL_GUARDED_BY(mu_);
};

class ReplayCompressor : public kvcache::SpanCompressor {
 public:
  explicit ReplayCompressor(std::shared_ptr<RecordingCompressor> source) : source_(std::move(source)) {}
  absl::StatusOr<kvcache::Span> Compress(const kvcache::DenseSpanView& view) override {
    return source_->Recorded(view.span_index);
  }

 private:
  std::shared_ptr<RecordingCompressor> source_;
};

class GpuCompressedCacheTest : public ::testing::TestWithParam<const char*> {};

// Prefill compresses two spans, decode a third: at every step the GPU's attention over its
// compressed spans (read in their stored layout on the device) and its dense tail matches
// the CPU CompressedKvCache's (fp32 key dots) over the same spans.
TEST_P(GpuCompressedCacheTest, AttentionOverCompressedSpansMatchesTheCpuCache) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(auto gpu, GpuModel::Load(kModelDir, {.device = 0, .gemm = GpuGemm::kPlain}));
  ASSERT_OK_AND_ASSIGN(auto cpu, model::Model::Load(kModelDir, {.num_threads = 2}));
  ASSERT_OK_AND_ASSIGN(kvcache::Policy policy, kvcache::ParsePolicy(GetParam()));
  auto policy_compressor = std::make_shared<kvcache::PolicySpanCompressor>(
      kvcache::PolicySpanCompressor::Options{policy, gpu->config().fingerprint});
  auto recording = std::make_shared<RecordingCompressor>(policy_compressor);
  constexpr int kSpan = 16, kCapacity = 96;
  ASSERT_OK_AND_ASSIGN(auto gcache, gpu->NewCache(kCapacity, {.compressor = recording, .span_tokens = kSpan}));
  kvcache::CompressedKvCache::Options o = kvcache::CompressedKvCache::OptionsFor(cpu->config(), kSpan, kCapacity);
  o.span_key_dot = kernels::SpanKeyDot::kFloat;
  ASSERT_OK_AND_ASSIGN(auto ccache, kvcache::CompressedKvCache::Create(o, std::make_shared<ReplayCompressor>(recording)));
  const int vocab = gpu->config().vocab_size;
  std::vector<int32_t> tokens = {5, 17, 300, 42, 9, 1000, 77, 3, 250, 11, 64, 8, 4000, 12, 13, 2, 99, 120,
                                 7, 18, 301, 43, 10, 1001, 78, 4, 251, 12, 65, 9, 4001, 13, 14, 3, 100, 121,
                                 6, 19, 302, 44};
  for (int step = 0; step < 12; ++step) {
    std::vector<float> gl, cl;
    const auto mode = step == 0 ? model::LogitsMode::kAllTokens : model::LogitsMode::kLastToken;
    GpuForwardItem gi{.tokens = tokens, .cache = gcache.get(), .logits_mode = mode, .logits = &gl};
    model::ForwardItem ci{.tokens = tokens, .cache = ccache.get(), .logits_mode = mode, .logits = &cl};
    ASSERT_OK(gpu->Forward(absl::MakeSpan(&gi, 1)));
    ASSERT_OK(cpu->Forward(absl::MakeSpan(&ci, 1)));
    ExpectClose(gl, cl, vocab, 2e-4, std::string(GetParam()) + " step " + std::to_string(step));
    ASSERT_EQ(gcache->num_tokens(), ccache->num_tokens());
    ASSERT_EQ(gcache->num_compressed_tokens(), ccache->num_compressed_tokens());
    tokens = {static_cast<int32_t>(ArgMax(cl, static_cast<int>(cl.size()) - vocab, vocab))};
  }
  EXPECT_EQ(gcache->num_compressed_tokens(), 3 * kSpan);  // 51 tokens: spans 0, 1 and 2
  EXPECT_EQ(gcache->spans().size(), 3u);
  // The dense rows grew for the 40-token prompt and dropped each span's rows: less than a
  // dense cache's full capacity.
  EXPECT_GE(gcache->dense_capacity(), 40);
  EXPECT_LT(gcache->dense_capacity(), kCapacity);
  ASSERT_OK_AND_ASSIGN(auto dense, gpu->NewCache(kCapacity));
  EXPECT_LT(gcache->memory_bytes(), dense->memory_bytes());
}

INSTANTIATE_TEST_SUITE_P(Policies, GpuCompressedCacheTest,
                         ::testing::Values("int4(g=32)", "sinks(n=4)+window(n=8)/int8", "keynorm(keep=0.25)/int8",
                                           "int4(g=32)/minicache(from=0.5)", "bf16/pod(group=2,sinks=4,window=4)",
                                           "sentinel-analogue(k=4)/bf16", "int2(g=16)", "kvmerger(sim=0.5)/int8",
                                           "mikv(keep_hi=0.25)"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name;
                           for (const char* p = info.param; *p; ++p) name += std::isalnum(*p) ? *p : '_';
                           return name;
                         });

// A policy with no main reducer and no sharing (codec-only, or sinks / window) is encoded on
// the device (EncodeSpanCuda); the same compressor behind a wrapper runs on the host. Both
// caches must hold the same spans, byte for byte, and give the same logits bit for bit
// (their K/V come from the same kernels): `steps` greedy steps from `tokens`, spans of
// `span_tokens` tokens, `num_spans` of them at the end.
void ExpectDeviceEncodingMakesTheHostCompressorsSpans(GpuModel& gpu, const std::string& policy_text, int span_tokens,
                                                      std::vector<int32_t> tokens, int steps, size_t num_spans) {
  SCOPED_TRACE(policy_text);
  ASSERT_OK_AND_ASSIGN(kvcache::Policy policy, kvcache::ParsePolicy(policy_text));
  auto compressor = std::make_shared<kvcache::PolicySpanCompressor>(
      kvcache::PolicySpanCompressor::Options{policy, gpu.config().fingerprint});
  ASSERT_OK_AND_ASSIGN(auto on_device, gpu.NewCache(64, {.compressor = compressor, .span_tokens = span_tokens}));
  ASSERT_OK_AND_ASSIGN(auto on_host, gpu.NewCache(64, {.compressor = std::make_shared<RecordingCompressor>(compressor),
                                                       .span_tokens = span_tokens}));
  ASSERT_TRUE(on_device->encodes_on_device());
  ASSERT_FALSE(on_host->encodes_on_device());
  for (int step = 0; step < steps; ++step) {
    std::vector<float> a, b;
    GpuForwardItem da{.tokens = tokens, .cache = on_device.get(), .logits = &a};
    GpuForwardItem hb{.tokens = tokens, .cache = on_host.get(), .logits = &b};
    ASSERT_OK(gpu.Forward(absl::MakeSpan(&da, 1)));
    ASSERT_OK(gpu.Forward(absl::MakeSpan(&hb, 1)));
    ASSERT_EQ(a, b) << "step " << step;
    tokens = {static_cast<int32_t>(ArgMax(a, 0, gpu.config().vocab_size))};
  }
  ASSERT_EQ(on_device->spans().size(), num_spans);
  EXPECT_TRUE(on_device->spans() == on_host->spans());
  for (const kvcache::Span& span : on_device->spans()) EXPECT_OK(kvcache::ValidateSpan(span));
}

class GpuDeviceCodecTest : public ::testing::TestWithParam<const char*> {};

// Spans of 16 tokens, a 20-token prompt and 14 decode steps: span 0 is compressed by the
// prefill, span 1 by a decode step.
TEST_P(GpuDeviceCodecTest, DeviceEncodingMakesTheHostCompressorsSpans) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(auto gpu, GpuModel::Load(kModelDir, {.device = 0, .gemm = GpuGemm::kPlain}));
  ExpectDeviceEncodingMakesTheHostCompressorsSpans(
      *gpu, GetParam(), 16, {5, 17, 300, 42, 9, 1000, 77, 3, 250, 11, 64, 8, 4000, 12, 13, 2, 99, 120, 7, 18}, 15, 2);
}

INSTANTIATE_TEST_SUITE_P(Codecs, GpuDeviceCodecTest,
                         ::testing::Values("int4(g=32)", "int8(g=16)", "int2(g=8)", "bf16", "fp16"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name;
                           for (const char* p = info.param; *p; ++p) name += std::isalnum(*p) ? *p : '_';
                           return name;
                         });

// Sinks / window policies gather each span's kept tokens (kvcache::ProtectedTokens) on the
// device. One model for all of them and a short run to keep the emulated test quick (the
// prefill is most of its time): spans of 8 tokens, a 17-token prompt compresses spans 0 and
// 1 (positions [0, 8) and [8, 16)), a decode step attends over them. Sinks and window
// together; a window alone; sinks alone, so span 1 keeps nothing (empty blocks); sinks past
// the first span (span 0 whole, span 1 its first 2 tokens); a window longer than the span
// (every token, no gather).
TEST(GpuDeviceSinksWindowTest, DeviceEncodingMakesTheHostCompressorsSpans) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(auto gpu, GpuModel::Load(kModelDir, {.device = 0, .gemm = GpuGemm::kPlain}));
  const std::vector<int32_t> prompt = {5, 17, 300, 42, 9, 1000, 77, 3, 250, 11, 64, 8, 4000, 12, 13, 2, 99};
  for (const char* policy : {"sinks(n=2)+window(n=3)/int8", "window(n=4)/int4(g=32)", "sinks(n=4)/bf16",
                             "sinks(n=10)/int2(g=4)", "sinks(n=1)+window(n=12)/fp16"}) {
    ExpectDeviceEncodingMakesTheHostCompressorsSpans(*gpu, policy, 8, prompt, 2, 2);
  }
}

TEST(GpuCompressedCacheErrorsTest, QueryAwareCompressorsAreUnimplemented) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_OK_AND_ASSIGN(auto gpu, GpuModel::Load(kModelDir, {.device = 0, .gemm = GpuGemm::kPlain}));
  ASSERT_OK_AND_ASSIGN(kvcache::Policy policy, kvcache::ParsePolicy("snapkv(keep=0.5,obs=4)/int8"));
  auto compressor = std::make_shared<kvcache::PolicySpanCompressor>(
      kvcache::PolicySpanCompressor::Options{policy, gpu->config().fingerprint});
  EXPECT_THAT(gpu->NewCache(64, {.compressor = compressor, .span_tokens = 16}),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(gpu->NewCache(64, {.compressor = compressor, .span_tokens = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(Gemm, GpuModelTest, ::testing::Values(GpuGemm::kPlain, GpuGemm::kCublasLt),
                         [](const ::testing::TestParamInfo<GpuGemm>& info) {
                           return std::string(info.param == GpuGemm::kPlain ? "plain" : "cublaslt");
                         });

// A Llama-3-like shape small enough for the emulator: GQA (2 query heads per KV head),
// llama3 RoPE, untied lm_head.
model::ModelConfig TinyRandomConfig() {
  model::ModelConfig c;
  c.architecture_name = "LlamaForCausalLM";
  c.vocab_size = 96;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = model::RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8.0;
  return c;
}

// A prefill of 12 tokens (every token's logits) and one decode step, concatenated.
std::vector<float> PrefillAndStep(GpuModel& gpu) {
  std::vector<float> all, step;
  auto cache = gpu.NewCache(32);
  EXPECT_OK(cache.status());
  if (!cache.ok()) return {};
  const std::vector<int32_t> prompt = {5, 17, 30, 42, 9, 95, 77, 3, 0, 11, 64, 8};
  GpuForwardItem item{.tokens = prompt, .cache = cache->get(), .logits_mode = model::LogitsMode::kAllTokens,
                      .logits = &all};
  EXPECT_OK(gpu.Forward(absl::MakeSpan(&item, 1)));
  const int32_t next = 50;
  item = {.tokens = absl::MakeConstSpan(&next, 1), .cache = cache->get(), .logits = &step};
  EXPECT_OK(gpu.Forward(absl::MakeSpan(&item, 1)));
  all.insert(all.end(), step.begin(), step.end());
  return all;
}

// Random weights made on the device: the forward pass runs on them with finite logits, the
// same seed gives the same weights (bit-identical logits: the plain GEMM is deterministic)
// and fingerprint, another seed other weights; the weight bytes are the shape's matrices.
TEST(GpuModelRandomTest, ForwardIsFiniteAndDeterministicForASeed) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const model::ModelConfig config = TinyRandomConfig();
  ASSERT_OK_AND_ASSIGN(auto a, GpuModel::CreateRandom(config, 7, {.device = 0, .gemm = GpuGemm::kPlain}));
  ASSERT_OK_AND_ASSIGN(auto b, GpuModel::CreateRandom(config, 7, {.device = 0, .gemm = GpuGemm::kPlain}));
  ASSERT_OK_AND_ASSIGN(auto c, GpuModel::CreateRandom(config, 8, {.device = 0, .gemm = GpuGemm::kPlain}));
  EXPECT_EQ(a->config().fingerprint, "random:7:v96-h64-i160-l2-q4-kv2-d16");
  EXPECT_EQ(a->config().fingerprint, b->config().fingerprint);
  EXPECT_NE(a->config().fingerprint, c->config().fingerprint);
  const int64_t per_layer = int64_t{(4 + 2 * 2) * 16} * 64 + 64 * 64 + 2 * 160 * 64 + 64 * 160;
  EXPECT_EQ(a->weight_memory_bytes(), 2 * (2 * 96 * 64 + 2 * per_layer));  // embed + lm_head + layers
  const std::vector<float> la = PrefillAndStep(*a), lb = PrefillAndStep(*b), lc = PrefillAndStep(*c);
  ASSERT_EQ(la.size(), size_t{13 * 96});
  for (float v : la) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(la, lb);
  EXPECT_NE(la, lc);
  // Not a constant: the logits of a row differ across the vocabulary.
  EXPECT_NE(*std::min_element(la.begin(), la.begin() + 96), *std::max_element(la.begin(), la.begin() + 96));
}

TEST(GpuModelRandomTest, TiedEmbeddingsAndBiasesFollowTheConfig) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  model::ModelConfig config = TinyRandomConfig();
  config.tie_word_embeddings = true;
  config.qkv_bias = true;
  config.fingerprint = "abc";
  ASSERT_OK_AND_ASSIGN(auto m, GpuModel::CreateRandom(config, 1, {.device = 0, .gemm = GpuGemm::kPlain}));
  EXPECT_EQ(m->config().fingerprint, "random:1:v96-h64-i160-l2-q4-kv2-d16-tied-qkvbias:abc");
  const int64_t per_layer = int64_t{(4 + 2 * 2) * 16} * 64 + 64 * 64 + 2 * 160 * 64 + 64 * 160;
  EXPECT_EQ(m->weight_memory_bytes(), 2 * (96 * 64 + 2 * per_layer));  // no lm_head
  for (float v : PrefillAndStep(*m)) ASSERT_TRUE(std::isfinite(v));
}

TEST(GpuModelRandomTest, BadShapeOrDeviceIsAnError) {
  model::ModelConfig config = TinyRandomConfig();
  EXPECT_THAT(GpuModel::CreateRandom(config, 1, {.device = 99}), StatusIs(absl::StatusCode::kUnavailable));
  config.num_kv_heads = 3;  // 4 heads
  EXPECT_THAT(GpuModel::CreateRandom(config, 1, {.device = 0}), StatusIs(absl::StatusCode::kInvalidArgument));
  config = TinyRandomConfig();
  config.head_dim = 15;
  EXPECT_THAT(GpuModel::CreateRandom(config, 1, {.device = 0}), StatusIs(absl::StatusCode::kInvalidArgument));
  config = TinyRandomConfig();
  config.vocab_size = 0;
  EXPECT_THAT(GpuModel::CreateRandom(config, 1, {.device = 0}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GpuModelLoadTest, MissingDeviceOrModelIsAnError) {
  EXPECT_THAT(GpuModel::Load(kModelDir, {.device = 99}), StatusIs(absl::StatusCode::kUnavailable));
  if (kernels::CudaDeviceCount() > 0) {
    EXPECT_THAT(GpuModel::Load("/nonexistent", {.device = 0}), StatusIs(absl::StatusCode::kNotFound));
  }
}

}  // namespace
}  // namespace kvspan::gpu
