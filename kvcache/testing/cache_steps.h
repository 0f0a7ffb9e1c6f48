// Test-only helpers for caches under the real forward pass (compressed_kv_cache_test,
// compressed_kv_cache_commit_test): codec-only compressors, one Forward step of one cache,
// deterministic token ids, logit differences. Thread-compatible.
#ifndef KVSPAN_KVCACHE_TESTING_CACHE_STEPS_H_
#define KVSPAN_KVCACHE_TESTING_CACHE_STEPS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "common/temp_dir.h"
#include "gtest/gtest.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/entry_block.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace kvspan::kvcache::testing {

// A codec-only policy ("int4(g=8)", "bf16"): every token kept, in that codec; the span
// headers' fingerprint is "test". group_size is ignored for bf16/fp16.
PolicySpanCompressor::Options CodecOnly(Codec codec, int group_size);
std::shared_ptr<SpanCompressor> CodecCompressor(Codec codec, int group_size);

// Forward of `tokens` through `cache` in one chunk (a failure is a test failure); returns
// the last token's logits (empty on failure).
std::vector<float> Step(const model::Model& m, model::KvCache* cache, absl::Span<const int32_t> tokens);

// max |a[i] - b[i]|. REQUIRES: a.size() == b.size().
float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);

// n token ids in [0, vocab), a fixed function of seed (no random engine).
std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed);

// A fixture with one tiny random Llama (RandomCheckpointOptions defaults: 2 layers, 4 heads,
// 2 KV heads, head_dim 16, vocabulary 97), loaded once per test suite with 2 threads.
class TinyModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  // CompressedKvCache options for the model with spans of `span_tokens`.
  CompressedKvCache::Options Opts(int span_tokens, int capacity = 256) const {
    return CompressedKvCache::OptionsFor(model_->config(), span_tokens, capacity);
  }
  static ::kvspan::testing::TempDir* dir_;
  static model::Model* model_;
};

}  // namespace kvspan::kvcache::testing

#endif  // KVSPAN_KVCACHE_TESTING_CACHE_STEPS_H_
