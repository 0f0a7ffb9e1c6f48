// CachePolicy: resolution (dense, canonical strings, storability, errors) and planning
// against what real caches measure.
#include "kvcache/cache_policy.h"

#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/testing/cache_steps.h"
#include "model/testing/random_checkpoint.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

class CachePolicyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ::kvspan::testing::TempDir();
    model_ = model::testing::WriteAndLoadRandomModel(dir_->path(), {}, /*num_threads=*/2).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  static ::kvspan::testing::TempDir* dir_;
  static model::Model* model_;
};
::kvspan::testing::TempDir* CachePolicyTest::dir_ = nullptr;
model::Model* CachePolicyTest::model_ = nullptr;

TEST_F(CachePolicyTest, ResolvesDenseAndCanonicalPolicies) {
  ASSERT_OK_AND_ASSIGN(auto dense, CachePolicy::Resolve("dense", model_->config(), 16));
  EXPECT_TRUE(dense->dense());
  EXPECT_FALSE(dense->storable());
  EXPECT_EQ(dense->canonical(), "dense");
  ASSERT_OK_AND_ASSIGN(auto int4, CachePolicy::Resolve("sinks(4)+window(8)/int4", model_->config(), 16));
  EXPECT_FALSE(int4->dense());
  EXPECT_TRUE(int4->storable());
  EXPECT_EQ(int4->canonical(), "sinks(n=4)+window(n=8)/int4(g=32)");
  ASSERT_OK_AND_ASSIGN(auto snapkv, CachePolicy::Resolve("snapkv(keep=0.5)/bf16", model_->config(), 16));
  EXPECT_FALSE(snapkv->storable()) << "query-aware spans never go to the store";
  EXPECT_THAT(CachePolicy::Resolve("int4/lru", model_->config(), 16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("position")));
  EXPECT_THAT(CachePolicy::Resolve("int4", model_->config(), 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(CachePolicyTest, PlannedBytesMatchWhatCachesMeasure) {
  const std::vector<int32_t> tokens = testing::RandomTokens(80, model_->config().vocab_size, 3);
  for (const char* text : {"dense", "bf16", "int8(g=16)", "int4(g=32)"}) {
    ASSERT_OK_AND_ASSIGN(auto policy, CachePolicy::Resolve(text, model_->config(), 16));
    ASSERT_OK_AND_ASSIGN(auto cache, policy->NewCache(*model_, 80, {}));
    for (int begin = 0; begin < 80; begin += 16) {
      testing::Step(*model_, cache.get(), absl::MakeConstSpan(tokens).subspan(begin, 16));
    }
    const double measured = static_cast<double>(cache->memory_bytes());
    // Random K/V and real K/V compress to the same sizes (codec-only policies keep every
    // token); the dense cache plans exactly its allocation. The 3% is the span list's
    // unused vector capacity (5 spans in room for 8: measured 672 of 27,693 bytes for int4).
    EXPECT_LE(static_cast<double>(policy->PlannedBytes(80)), measured) << text;
    EXPECT_NEAR(static_cast<double>(policy->PlannedBytes(80)), measured, 0.03 * measured) << text;
  }
}

TEST_F(CachePolicyTest, DenseCacheTakesNoPrefix) {
  ASSERT_OK_AND_ASSIGN(auto dense, CachePolicy::Resolve("dense", model_->config(), 16));
  ASSERT_OK_AND_ASSIGN(auto bf16, CachePolicy::Resolve("bf16", model_->config(), 16));
  ASSERT_OK_AND_ASSIGN(auto cache, bf16->NewCache(*model_, 64, {}));
  const std::vector<int32_t> tokens = testing::RandomTokens(16, model_->config().vocab_size, 4);
  testing::Step(*model_, cache.get(), tokens);
  auto* compressed = static_cast<CompressedKvCache*>(cache.get());
  ASSERT_EQ(compressed->spans().size(), 1u);
  EXPECT_THAT(dense->NewCache(*model_, 64, compressed->spans()), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(auto warm, bf16->NewCache(*model_, 64, compressed->spans()));
  EXPECT_EQ(warm->num_tokens(), 16);
}

}  // namespace
}  // namespace kvspan::kvcache
