#include "model/kv_cache.h"

#include <cmath>
#include <random>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"

namespace kvspan::model {
namespace {

using ::kvspan::testing::StatusIs;

DenseKvCache::Options SmallOptions() {
  DenseKvCache::Options o;
  o.num_layers = 2;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 8;
  o.capacity_tokens = 32;
  return o;
}

// Random fused qkv rows for n tokens: [n, (heads + 2 * kv_heads) * head_dim].
struct Rows {
  Rows(const DenseKvCache::Options& o, int n, uint32_t seed) : num_new(n) {
    width = (o.num_heads + 2 * o.num_kv_heads) * o.head_dim;
    q_width = o.num_heads * o.head_dim;
    kv_width = o.num_kv_heads * o.head_dim;
    data.resize(n * width);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1, 1);
    for (float& x : data) x = dist(rng);
  }
  LayerQkv qkv() const {
    return {.num_new = num_new, .row_stride = width, .q = data.data(), .k = data.data() + q_width,
            .v = data.data() + q_width + kv_width};
  }
  int num_new, width, q_width, kv_width;
  std::vector<float> data;
};

TEST(DenseKvCacheTest, CreateRejectsBadOptions) {
  DenseKvCache::Options o = SmallOptions();
  o.capacity_tokens = 0;
  EXPECT_THAT(DenseKvCache::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o = SmallOptions();
  o.num_heads = 3;
  EXPECT_THAT(DenseKvCache::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o = SmallOptions();
  o.sliding_window = -1;
  EXPECT_THAT(DenseKvCache::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Appending a sequence in chunks (with commits) gives, for every chunk, the attention of
// its queries over all keys so far, as AttentionRef computes it on the whole sequence.
TEST(DenseKvCacheTest, ChunkedAppendMatchesReferenceOverWholeSequence) {
  for (int window : {0, 5}) {
    DenseKvCache::Options o = SmallOptions();
    o.sliding_window = window;
    ASSERT_OK_AND_ASSIGN(auto cache, DenseKvCache::Create(o));
    std::vector<float> all_k, all_v;  // [kv_head][t][head_dim] built up per layer 1
    const int chunks[] = {3, 1, 7, 1, 1, 9};
    int start = 0;
    std::vector<std::vector<float>> k_hist(o.num_kv_heads), v_hist(o.num_kv_heads);
    for (int n : chunks) {
      std::vector<float> out(n * o.num_heads * o.head_dim);
      Rows rows0(o, n, 100 + start), rows1(o, n, 200 + start);
      ASSERT_OK(cache->AppendAndAttend(0, rows0.qkv(), out.data(), nullptr));
      ASSERT_OK(cache->AppendAndAttend(1, rows1.qkv(), out.data(), nullptr));
      EXPECT_EQ(cache->num_tokens(), start);  // not visible before Commit
      ASSERT_OK(cache->Commit(n));
      ASSERT_EQ(cache->num_tokens(), start + n);
      // Reference on layer 1's full history.
      for (int j = 0; j < n; ++j) {
        for (int g = 0; g < o.num_kv_heads; ++g) {
          const float* k = rows1.data.data() + j * rows1.width + rows1.q_width + g * o.head_dim;
          k_hist[g].insert(k_hist[g].end(), k, k + o.head_dim);
          v_hist[g].insert(v_hist[g].end(), k + rows1.kv_width, k + rows1.kv_width + o.head_dim);
        }
      }
      const int total = start + n;
      std::vector<float> k_flat, v_flat;
      for (int g = 0; g < o.num_kv_heads; ++g) {
        k_flat.insert(k_flat.end(), k_hist[g].begin(), k_hist[g].end());
        v_flat.insert(v_flat.end(), v_hist[g].begin(), v_hist[g].end());
      }
      std::vector<float> ref(out.size());
      kernels::AttentionParams p;
      p.q = rows1.data.data();
      p.q_row_stride = rows1.width;
      p.k = k_flat.data();
      p.k_head_stride = int64_t{total} * o.head_dim;
      p.k_token_stride = o.head_dim;
      p.v = v_flat.data();
      p.v_head_stride = p.k_head_stride;
      p.v_token_stride = o.head_dim;
      p.out = ref.data();
      p.out_row_stride = o.num_heads * o.head_dim;
      p.num_q = n;
      p.num_keys = total;
      p.num_heads = o.num_heads;
      p.num_kv_heads = o.num_kv_heads;
      p.head_dim = o.head_dim;
      p.q_start = start;
      p.window = window;
      p.scale = 1.0f / std::sqrt(8.0f);
      kernels::AttentionRef(p);
      for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5 + 1e-4 * std::abs(ref[i])) << i;
      // The stored keys are the appended ones.
      EXPECT_EQ(cache->key(1, 1, start)[3], k_hist[1][start * o.head_dim + 3]);
      start = total;
    }
  }
}

TEST(DenseKvCacheTest, FullCacheIsResourceExhausted) {
  DenseKvCache::Options o = SmallOptions();
  o.capacity_tokens = 4;
  ASSERT_OK_AND_ASSIGN(auto cache, DenseKvCache::Create(o));
  Rows rows(o, 3, 1), more(o, 2, 2);
  std::vector<float> out(3 * o.num_heads * o.head_dim);
  ASSERT_OK(cache->AppendAndAttend(0, rows.qkv(), out.data(), nullptr));
  ASSERT_OK(cache->AppendAndAttend(1, rows.qkv(), out.data(), nullptr));
  ASSERT_OK(cache->Commit(3));
  EXPECT_THAT(cache->AppendAndAttend(0, more.qkv(), out.data(), nullptr),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(cache->num_tokens(), 3);
}

TEST(DenseKvCacheTest, CommitNeedsEveryLayer) {
  ASSERT_OK_AND_ASSIGN(auto cache, DenseKvCache::Create(SmallOptions()));
  Rows rows(SmallOptions(), 2, 1);
  std::vector<float> out(2 * 4 * 8);
  ASSERT_OK(cache->AppendAndAttend(0, rows.qkv(), out.data(), nullptr));
  EXPECT_THAT(cache->Commit(2), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(cache->AppendAndAttend(1, rows.qkv(), out.data(), nullptr));
  EXPECT_THAT(cache->Commit(1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(cache->AppendAndAttend(2, rows.qkv(), out.data(), nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(cache->Commit(2));
  EXPECT_EQ(cache->num_tokens(), 2);
}

TEST(DenseKvCacheTest, TruncateDropsTokensAndPending) {
  ASSERT_OK_AND_ASSIGN(auto cache, DenseKvCache::Create(SmallOptions()));
  Rows rows(SmallOptions(), 5, 1);
  std::vector<float> out(5 * 4 * 8);
  for (int l = 0; l < 2; ++l) ASSERT_OK(cache->AppendAndAttend(l, rows.qkv(), out.data(), nullptr));
  ASSERT_OK(cache->Commit(5));
  ASSERT_OK(cache->AppendAndAttend(0, rows.qkv(), out.data(), nullptr));
  cache->Truncate(cache->num_tokens());  // drops the pending append only
  EXPECT_EQ(cache->num_tokens(), 5);
  EXPECT_THAT(cache->Commit(5), StatusIs(absl::StatusCode::kFailedPrecondition));
  cache->Truncate(2);
  EXPECT_EQ(cache->num_tokens(), 2);
  cache->Truncate(10);
  EXPECT_EQ(cache->num_tokens(), 2);
}

// Phase one checks and changes nothing visible; phase two applies; Truncate cancels.
TEST(DenseKvCacheTest, PrepareCommitThenCommit) {
  ASSERT_OK_AND_ASSIGN(auto cache, DenseKvCache::Create(SmallOptions()));
  Rows rows(SmallOptions(), 2, 1);
  std::vector<float> out(2 * 4 * 8);
  ASSERT_OK(cache->AppendAndAttend(0, rows.qkv(), out.data(), nullptr));
  EXPECT_THAT(cache->PrepareCommit(2), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(cache->AppendAndAttend(1, rows.qkv(), out.data(), nullptr));
  ASSERT_OK(cache->PrepareCommit(2));
  EXPECT_EQ(cache->num_tokens(), 0);
  ASSERT_OK(cache->Commit(2));
  EXPECT_EQ(cache->num_tokens(), 2);
  for (int l = 0; l < 2; ++l) ASSERT_OK(cache->AppendAndAttend(l, rows.qkv(), out.data(), nullptr));
  ASSERT_OK(cache->PrepareCommit(2));
  cache->Truncate(cache->num_tokens());
  EXPECT_THAT(cache->Commit(2), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(cache->num_tokens(), 2);
}

// memory_bytes is the two K/V allocations, from Create on, however many tokens are held.
TEST(DenseKvCacheTest, MemoryBytesEqualsItsAllocation) {
  const DenseKvCache::Options o = SmallOptions();
  ASSERT_OK_AND_ASSIGN(auto cache, DenseKvCache::Create(o));
  const int64_t allocation = 2 * int64_t{o.num_layers} * o.num_kv_heads * o.capacity_tokens * o.head_dim *
                             static_cast<int64_t>(sizeof(float));
  EXPECT_EQ(cache->memory_bytes(), allocation);
  Rows rows(o, 5, 1);
  std::vector<float> out(5 * 4 * 8);
  for (int l = 0; l < 2; ++l) ASSERT_OK(cache->AppendAndAttend(l, rows.qkv(), out.data(), nullptr));
  ASSERT_OK(cache->Commit(5));
  EXPECT_EQ(cache->memory_bytes(), allocation);
}

}  // namespace
}  // namespace kvspan::model
