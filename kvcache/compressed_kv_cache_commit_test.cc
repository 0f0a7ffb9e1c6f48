// CompressedKvCache's two-phase commit (model/kv_cache.h): PrepareCommit compresses the
// spans the pending tokens complete into staged state, Commit applies it and cannot fail
// after a successful PrepareCommit; a compressor error leaves no token committed, alone and
// inside a Forward batch of several caches (all or nothing).
#include <memory>
#include <vector>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kvcache/compressed_kv_cache.h"
#include "kvcache/testing/cache_steps.h"
#include "model/model.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using testing::CodecOnly;
using testing::MaxAbsDiff;
using testing::RandomTokens;
using testing::Step;
using testing::TinyModelTest;

// A codec-only compressor (int4, g = 8) that returns `failure` when it is not OK, and can
// break the SpanCompressor contract (a span at the wrong first_position).
class ScriptedCompressor final : public SpanCompressor {
 public:
  absl::StatusOr<Span> Compress(const DenseSpanView& view) override {
    ++calls;
    if (!failure.ok()) return failure;
    absl::StatusOr<Span> s = inner.Compress(view);
    if (s.ok() && wrong_position) s->header.first_position += 1;
    return s;
  }
  PolicySpanCompressor inner{CodecOnly(Codec::kInt4, 8)};
  absl::Status failure;
  bool wrong_position = false;
  int calls = 0;
};

// What a caller can observe of a cache.
struct Visible {
  int num_tokens = 0;
  int num_tail_tokens = 0;
  std::vector<Span> spans;
  friend bool operator==(const Visible&, const Visible&) = default;
};
Visible VisibleOf(const CompressedKvCache& c) { return {c.num_tokens(), c.num_tail_tokens(), c.spans()}; }

// Through Forward: the compressor's error comes back with its own code and no token is
// committed; a span that breaks the contract is Internal, likewise with nothing committed.
// The same step then succeeds and gives a fresh cache's logits.
TEST_F(TinyModelTest, CompressorErrorsLeaveNoTokenCommitted) {
  auto compressor = std::make_shared<ScriptedCompressor>();
  ASSERT_OK_AND_ASSIGN(auto cache, CompressedKvCache::Create(Opts(4), compressor));
  const std::vector<int32_t> tokens = RandomTokens(6, model_->config().vocab_size, 9);
  std::vector<float> logits;
  model::ForwardItem item{absl::MakeConstSpan(tokens).subspan(0, 5), cache.get(), model::LogitsMode::kLastToken,
                          &logits};
  compressor->failure = absl::UnavailableError("policy engine down");
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(cache->num_tokens(), 0);
  EXPECT_EQ(cache->num_tail_tokens(), 0);
  compressor->failure = absl::OkStatus();
  compressor->wrong_position = true;
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&item, 1)), StatusIs(absl::StatusCode::kInternal));
  EXPECT_EQ(cache->num_tokens(), 0);
  EXPECT_TRUE(cache->spans().empty());
  compressor->wrong_position = false;
  const std::vector<float> got = Step(*model_, cache.get(), absl::MakeConstSpan(tokens).subspan(0, 5));
  EXPECT_EQ(cache->spans().size(), 1u);
  EXPECT_EQ(cache->num_tail_tokens(), 1);

  ASSERT_OK_AND_ASSIGN(auto fresh, CompressedKvCache::Create(Opts(4), testing::CodecCompressor(Codec::kInt4, 8)));
  EXPECT_EQ(got, Step(*model_, fresh.get(), absl::MakeConstSpan(tokens).subspan(0, 5)));
  EXPECT_EQ(fresh->spans(), cache->spans());
}

// The cache alone: Commit without PrepareCommit prepares first and returns the
// compressor's code (or Internal for a broken span) with nothing committed; the tokens stay
// pending, so a retried Commit compresses again and commits them.
TEST_F(TinyModelTest, CommitReturnsCompressorCodesAndCanBeRetried) {
  const auto opts = Opts(1);
  auto compressor = std::make_shared<ScriptedCompressor>();
  ASSERT_OK_AND_ASSIGN(auto cache, CompressedKvCache::Create(opts, compressor));
  const int hd = opts.head_dim, width = (opts.num_heads + 2 * opts.num_kv_heads) * hd;
  std::vector<float> qkv(width, 0.25f), out(opts.num_heads * hd);
  model::LayerQkv in{1, width, qkv.data(), qkv.data() + opts.num_heads * hd,
                     qkv.data() + (opts.num_heads + opts.num_kv_heads) * hd};
  for (int l = 0; l < opts.num_layers; ++l) ASSERT_OK(cache->AppendAndAttend(l, in, out.data(), nullptr));
  compressor->failure = absl::InvalidArgumentError("value out of the codec's range");
  EXPECT_THAT(cache->Commit(1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(cache->num_tokens(), 0);
  compressor->failure = absl::OkStatus();
  compressor->wrong_position = true;
  EXPECT_THAT(cache->Commit(1), StatusIs(absl::StatusCode::kInternal));
  EXPECT_EQ(cache->num_tokens(), 0);
  EXPECT_TRUE(cache->spans().empty());
  compressor->wrong_position = false;
  ASSERT_OK(cache->Commit(1));
  EXPECT_EQ(cache->num_tokens(), 1);
  EXPECT_EQ(cache->spans().size(), 1u);
  EXPECT_EQ(cache->num_tail_tokens(), 0);
}

// PrepareCommit stages the completed spans out of sight; Commit applies them without
// compressing again; an append after PrepareCommit cancels it, and Truncate drops it.
TEST_F(TinyModelTest, PrepareCommitStagesUntilCommit) {
  const auto opts = Opts(2);
  auto compressor = std::make_shared<ScriptedCompressor>();
  ASSERT_OK_AND_ASSIGN(auto cache, CompressedKvCache::Create(opts, compressor));
  const int hd = opts.head_dim, width = (opts.num_heads + 2 * opts.num_kv_heads) * hd;
  std::vector<float> qkv(5 * width, 0.5f), out(5 * opts.num_heads * hd);
  model::LayerQkv in{5, width, qkv.data(), qkv.data() + opts.num_heads * hd,
                     qkv.data() + (opts.num_heads + opts.num_kv_heads) * hd};
  auto append_all = [&] {
    for (int l = 0; l < opts.num_layers; ++l) ASSERT_OK(cache->AppendAndAttend(l, in, out.data(), nullptr));
  };
  append_all();
  EXPECT_THAT(cache->PrepareCommit(4), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(cache->PrepareCommit(5));
  EXPECT_EQ(compressor->calls, 2);  // spans [0, 2) and [2, 4)
  EXPECT_EQ(VisibleOf(*cache), Visible{});
  cache->Truncate(cache->num_tokens());  // drops the pending tokens and the staged spans
  EXPECT_THAT(cache->Commit(5), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(VisibleOf(*cache), Visible{});

  append_all();
  ASSERT_OK(cache->PrepareCommit(5));
  append_all();  // the layers re-ran: Commit must prepare again
  ASSERT_OK(cache->Commit(5));
  EXPECT_EQ(compressor->calls, 6);
  append_all();
  ASSERT_OK(cache->PrepareCommit(5));
  EXPECT_EQ(compressor->calls, 9);  // the tail's 1 + 5 tokens complete three spans
  compressor->failure = absl::InternalError("Commit must not compress again");
  ASSERT_OK(cache->Commit(5));
  EXPECT_EQ(compressor->calls, 9);
  EXPECT_EQ(cache->num_tokens(), 10);
  EXPECT_EQ(cache->spans().size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(cache->spans()[i].header.first_position, 2 * i);
}

// A batch of three compressed caches in one Forward, each step completing a span in the
// first two: when the middle cache's compressor fails, Forward returns its code, every
// cache (the first one had already staged its span) is as before, and the same batch
// then gives exactly the logits and spans of a batch that never failed.
TEST_F(TinyModelTest, BatchWithOneFailingCompressorChangesNoCache) {
  const int vocab = model_->config().vocab_size;
  const std::vector<std::vector<int32_t>> tokens = {RandomTokens(8, vocab, 11), RandomTokens(4, vocab, 12),
                                                    RandomTokens(6, vocab, 13)};
  const int prefill[] = {6, 3, 5};  // then 2, 1 and 1 tokens in the batch
  struct Batch {
    std::vector<std::shared_ptr<ScriptedCompressor>> compressors;
    std::vector<std::unique_ptr<CompressedKvCache>> caches;
    std::vector<std::vector<float>> logits;
    std::vector<model::ForwardItem> items;
  };
  auto make_batch = [&](Batch* b) {
    for (int i = 0; i < 3; ++i) {
      b->compressors.push_back(std::make_shared<ScriptedCompressor>());
      auto cache = CompressedKvCache::Create(Opts(4), b->compressors.back());
      ASSERT_OK(cache.status());
      b->caches.push_back(*std::move(cache));
      Step(*model_, b->caches.back().get(), absl::MakeConstSpan(tokens[i]).subspan(0, prefill[i]));
    }
    b->logits.resize(3);
    for (int i = 0; i < 3; ++i) {
      b->items.push_back({absl::MakeConstSpan(tokens[i]).subspan(prefill[i]), b->caches[i].get(),
                          model::LogitsMode::kAllTokens, &b->logits[i]});
    }
  };
  Batch failing, clean;
  make_batch(&failing);
  make_batch(&clean);
  std::vector<Visible> before;
  for (const auto& c : failing.caches) before.push_back(VisibleOf(*c));
  ASSERT_EQ(before[0].spans.size(), 1u);
  ASSERT_EQ(before[1].spans.size(), 0u);
  ASSERT_EQ(before[2].spans.size(), 1u);
  const int calls_before = failing.compressors[0]->calls;

  failing.compressors[1]->failure = absl::InvalidArgumentError("span values beyond fp16");
  EXPECT_THAT(model_->Forward(absl::MakeSpan(failing.items)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(failing.compressors[0]->calls, calls_before + 1);  // cache 0 staged its span first
  for (int i = 0; i < 3; ++i) EXPECT_EQ(VisibleOf(*failing.caches[i]), before[i]) << "cache " << i;

  failing.compressors[1]->failure = absl::OkStatus();
  ASSERT_OK(model_->Forward(absl::MakeSpan(failing.items)));
  ASSERT_OK(model_->Forward(absl::MakeSpan(clean.items)));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(failing.logits[i], clean.logits[i]) << "cache " << i << ": max |diff| "
                                                  << MaxAbsDiff(failing.logits[i], clean.logits[i]);
    EXPECT_EQ(VisibleOf(*failing.caches[i]), VisibleOf(*clean.caches[i])) << "cache " << i;
  }
  EXPECT_EQ(failing.caches[0]->spans().size(), 2u);
  EXPECT_EQ(failing.caches[1]->spans().size(), 1u);
  EXPECT_EQ(failing.caches[2]->spans().size(), 1u);
}

}  // namespace
}  // namespace kvspan::kvcache
