// CompressedKvCache::memory_bytes (model::KvCache): measured from the cache's buffers, it
// grows with every span compressed, and a compressed cache of N tokens holds fewer bytes
// the smaller its codec, all fewer than a dense fp32 cache of N tokens.
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/span.h"
#include "kvcache/testing/cache_steps.h"
#include "model/model.h"

namespace kvspan::kvcache {
namespace {

using testing::CodecCompressor;
using testing::RandomTokens;
using testing::Step;
using testing::TinyModelTest;

// Decode token by token (spans of 8): every Commit that compresses a span adds at least
// that span's bytes (the tail buffer never shrinks), and the total always covers the
// spans' own bytes plus the dense tail's K/V floats.
TEST_F(TinyModelTest, MemoryBytesGrowsWithSpans) {
  ASSERT_OK_AND_ASSIGN(auto cache, CompressedKvCache::Create(Opts(8, 64), CodecCompressor(Codec::kInt4, 8)));
  const auto& o = cache->options();
  const std::vector<int32_t> tokens = RandomTokens(64, model_->config().vocab_size, 17);
  int64_t before = cache->memory_bytes();
  EXPECT_GT(before, 0);  // the tail buffer exists from Create
  for (int pos = 0; pos < 64; ++pos) {
    const size_t num_spans = cache->spans().size();
    Step(*model_, cache.get(), absl::MakeConstSpan(tokens).subspan(pos, 1));
    const int64_t after = cache->memory_bytes();
    int64_t floor = 2 * int64_t{cache->num_tail_tokens()} * o.num_layers * o.num_kv_heads * o.head_dim *
                    static_cast<int64_t>(sizeof(float));
    for (const Span& span : cache->spans()) floor += SpanMemoryBytes(span);
    EXPECT_GE(after, floor) << "after " << pos + 1 << " tokens";
    if (cache->spans().size() > num_spans) {
      EXPECT_GE(after, before + SpanMemoryBytes(cache->spans().back())) << "after " << pos + 1 << " tokens";
    } else {
      EXPECT_GE(after, before);
    }
    before = after;
  }
  EXPECT_EQ(cache->spans().size(), 8u);
}

// N = 256 tokens in prefill chunks of S = 32 (every span compressed, the tail empty):
// int4 < bf16 < the dense fp32 cache of the same capacity, by the buffers they hold.
TEST_F(TinyModelTest, Int4HoldsLessThanBf16HoldsLessThanDense) {
  constexpr int kTokens = 256, kSpan = 32;
  const std::vector<int32_t> tokens = RandomTokens(kTokens, model_->config().vocab_size, 19);
  auto fill = [&](model::KvCache* cache) {
    for (int pos = 0; pos < kTokens; pos += kSpan) Step(*model_, cache, absl::MakeConstSpan(tokens).subspan(pos, kSpan));
  };
  ASSERT_OK_AND_ASSIGN(auto int4, CompressedKvCache::Create(Opts(kSpan, kTokens), CodecCompressor(Codec::kInt4, 32)));
  ASSERT_OK_AND_ASSIGN(auto bf16, CompressedKvCache::Create(Opts(kSpan, kTokens), CodecCompressor(Codec::kBF16, 0)));
  ASSERT_OK_AND_ASSIGN(auto dense, model_->NewDenseCache(kTokens));
  fill(int4.get());
  fill(bf16.get());
  fill(dense.get());
  ASSERT_EQ(int4->spans().size(), static_cast<size_t>(kTokens / kSpan));
  ASSERT_EQ(bf16->spans().size(), static_cast<size_t>(kTokens / kSpan));
  std::printf("memory_bytes over %d tokens: int4/g32 %lld, bf16 %lld, dense fp32 %lld\n", kTokens,
              static_cast<long long>(int4->memory_bytes()), static_cast<long long>(bf16->memory_bytes()),
              static_cast<long long>(dense->memory_bytes()));
  EXPECT_LT(int4->memory_bytes(), bf16->memory_bytes());
  EXPECT_LT(bf16->memory_bytes(), dense->memory_bytes());
}

}  // namespace
}  // namespace kvspan::kvcache
