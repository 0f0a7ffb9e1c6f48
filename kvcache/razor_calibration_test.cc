// RazorAttention's calibration pass (razor_probe_cache.h, razor_calibration.h): the probe's
// probabilities against an independent double-precision softmax of the same q/k under the
// real forward pass (tiny random checkpoints, with and without a sliding window), the probe
// leaving the forward pass untouched, echo/induction arithmetic on hand-built q/k, the
// selection rule, the heads file through kvcache::ParsePolicy, and the option errors.
#include "kvcache/razor_calibration.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/memory_bytes.h"
#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/policy.h"
#include "kvcache/razor_probe_cache.h"
#include "model/model.h"
#include "model/testing/random_checkpoint.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using HeadList = std::vector<std::pair<int, int>>;

// A KvCache in front of another that keeps a copy of every query row it sees, so the test
// can recompute attention from the same post-RoPE q the probe saw.
class QueryCapture final : public model::KvCache {
 public:
  QueryCapture(model::KvCache* inner, int num_layers, int q_width)
      : inner_(inner), q_width_(q_width), q_(num_layers) {}
  int num_tokens() const override { return inner_->num_tokens(); }
  absl::Status AppendAndAttend(int layer, const model::LayerQkv& in, float* out,
                               ThreadPool* pool) override {
    std::vector<float>& q = q_[layer];
    q.resize(static_cast<size_t>(inner_->num_tokens() + in.num_new) * q_width_);
    for (int j = 0; j < in.num_new; ++j) {
      std::copy_n(in.q + int64_t{j} * in.row_stride, q_width_,
                  &q[static_cast<size_t>(inner_->num_tokens() + j) * q_width_]);
    }
    return inner_->AppendAndAttend(layer, in, out, pool);
  }
  absl::Status PrepareCommit(int n) override { return inner_->PrepareCommit(n); }
  absl::Status Commit(int n) override { return inner_->Commit(n); }
  void Truncate(int n) override { inner_->Truncate(n); }
  int64_t memory_bytes() const override {
    int64_t bytes = inner_->memory_bytes();
    for (const std::vector<float>& q : q_) bytes += CapacityBytes(q);
    return bytes;
  }
  // Query head `head` of the token at `position` in `layer`: head_dim floats.
  const float* q(int layer, int position, int head, int head_dim) const {
    return &q_[layer][static_cast<size_t>(position) * q_width_ + static_cast<size_t>(head) * head_dim];
  }

 private:
  model::KvCache* inner_;
  int q_width_;
  std::vector<std::vector<float>> q_;  // [layer][position * q_width]
};

struct Row {
  int first_key = 0;
  std::vector<double> probs;
};

std::unique_ptr<model::Model> LoadRandomModel(const std::string& dir,
                                              const model::testing::RandomCheckpointOptions& o) {
  EXPECT_OK(model::testing::WriteRandomCheckpoint(dir, o));
  auto m = model::Model::Load(dir, {.num_threads = 2});
  EXPECT_OK(m.status());
  return m.ok() ? std::move(m).value() : nullptr;
}

// (a) Every scored row equals softmax(q.k / sqrt(head_dim)) over the visible keys, computed
// here in double from the captured q and the dense cache's keys.
void CheckProbeAgainstSoftmax(const model::testing::RandomCheckpointOptions& ckpt) {
  ::kvspan::testing::TempDir dir;
  std::unique_ptr<model::Model> m = LoadRandomModel(dir.path(), ckpt);
  ASSERT_NE(m, nullptr);
  const model::ModelConfig& cfg = m->config();
  RazorCalibrationOptions opt;
  opt.segment_tokens = 12;
  opt.repeats = 3;
  const std::vector<int32_t> tokens = RazorTrialTokens(opt, cfg, 0);
  ASSERT_EQ(tokens.size(), 1u + 12 * 3);

  std::map<std::tuple<int, int, int>, Row> rows;  // (layer, head, position)
  ASSERT_OK_AND_ASSIGN(auto dense, m->NewDenseCache(static_cast<int>(tokens.size())));
  RazorProbeCache::Options po;
  po.segment_tokens = 12;
  po.first_scored_position = 13;
  po.observer = [&](int layer, int head, int position, int first_key, absl::Span<const double> p) {
    rows[{layer, head, position}] = Row{first_key, std::vector<double>(p.begin(), p.end())};
  };
  ASSERT_OK_AND_ASSIGN(auto probe, RazorProbeCache::Create(std::move(dense), po));
  QueryCapture capture(probe.get(), cfg.num_layers, cfg.num_heads * cfg.head_dim);
  std::vector<float> logits;
  model::ForwardItem item{tokens, &capture, model::LogitsMode::kLastToken, &logits};
  ASSERT_OK(m->Forward(absl::MakeSpan(&item, 1)));

  const int n = static_cast<int>(tokens.size());
  EXPECT_EQ(rows.size(), static_cast<size_t>(cfg.num_layers) * cfg.num_heads * (n - 13));
  EXPECT_EQ(probe->num_scored_queries(), n - 13);
  const int group = cfg.num_heads / cfg.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(cfg.head_dim));
  for (int l = 0; l < cfg.num_layers; ++l) {
    for (int h = 0; h < cfg.num_heads; ++h) {
      for (int p = 13; p < n; ++p) {
        auto it = rows.find({l, h, p});
        ASSERT_NE(it, rows.end()) << l << " " << h << " " << p;
        const int first = cfg.sliding_window > 0 ? std::max(0, p - cfg.sliding_window + 1) : 0;
        ASSERT_EQ(it->second.first_key, first);
        ASSERT_EQ(it->second.probs.size(), static_cast<size_t>(p - first + 1));
        std::vector<double> ref(p - first + 1);
        double max_logit = -1e300, sum = 0.0;
        const float* q = capture.q(l, p, h, cfg.head_dim);
        for (int t = first; t <= p; ++t) {
          const float* k = probe->dense().key(l, h / group, t);
          double dot = 0.0;
          for (int d = 0; d < cfg.head_dim; ++d) dot += double{q[d]} * double{k[d]};
          ref[t - first] = dot * scale;
          max_logit = std::max(max_logit, ref[t - first]);
        }
        for (double& x : ref) sum += (x = std::exp(x - max_logit));
        for (int t = first; t <= p; ++t) {
          EXPECT_NEAR(it->second.probs[t - first], ref[t - first] / sum, 1e-12)
              << "layer " << l << " head " << h << " query " << p << " key " << t;
        }
      }
    }
  }
}

TEST(RazorProbeCacheTest, ProbabilitiesMatchDoubleSoftmaxOfSameQk) {
  model::testing::RandomCheckpointOptions o;  // llama, 2 layers, 4 heads, 2 kv heads
  CheckProbeAgainstSoftmax(o);
}

TEST(RazorProbeCacheTest, ProbabilitiesRespectSlidingWindow) {
  model::testing::RandomCheckpointOptions o;
  o.architecture = model::Architecture::kMistral;
  o.sliding_window = 9;  // < L = 12: the echo key p - L is outside the window
  CheckProbeAgainstSoftmax(o);
}

// (b) The probe does not perturb the forward pass: all-token logits are bit-identical to a
// plain DenseKvCache, in one chunk and in two (which also scores across chunks).
TEST(RazorProbeCacheTest, ForwardThroughProbeIsIdenticalToDense) {
  ::kvspan::testing::TempDir dir;
  std::unique_ptr<model::Model> m = LoadRandomModel(dir.path(), {});
  ASSERT_NE(m, nullptr);
  RazorCalibrationOptions opt;
  opt.segment_tokens = 10;
  opt.repeats = 3;
  const std::vector<int32_t> tokens = RazorTrialTokens(opt, m->config(), 1);
  const int n = static_cast<int>(tokens.size());

  auto run = [&](model::KvCache* cache, int split) {
    std::vector<float> all, part;
    for (auto [begin, end] : {std::pair{0, split}, std::pair{split, n}}) {
      model::ForwardItem item{absl::MakeConstSpan(tokens).subspan(begin, end - begin), cache,
                              model::LogitsMode::kAllTokens, &part};
      EXPECT_OK(m->Forward(absl::MakeSpan(&item, 1)));
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  };
  ASSERT_OK_AND_ASSIGN(auto dense, m->NewDenseCache(n));
  const std::vector<float> want = run(dense.get(), 17);

  std::vector<std::vector<double>> scores;
  for (int split : {17, 5}) {
    ASSERT_OK_AND_ASSIGN(auto inner, m->NewDenseCache(n));
    ASSERT_OK_AND_ASSIGN(auto probe, RazorProbeCache::Create(std::move(inner), {10, 11, nullptr}));
    const std::vector<float> got = run(probe.get(), split);
    if (split == 17) {
      EXPECT_EQ(got, want);  // same chunking: bit-identical
    }
    EXPECT_EQ(probe->num_scored_queries(), n - 11);
    scores.push_back(probe->MeanInduction());
    // The dense cache's allocation plus four [layers * heads] score arrays.
    EXPECT_EQ(probe->memory_bytes(), probe->dense().memory_bytes() + 4 * int64_t{m->config().num_layers} *
                                                                         m->config().num_heads * sizeof(double));
  }
  // Chunking changes the matrix-product batch, so q/k may differ by fp32 rounding only.
  ASSERT_EQ(scores[0].size(), scores[1].size());
  for (size_t i = 0; i < scores[0].size(); ++i) EXPECT_NEAR(scores[0][i], scores[1][i], 1e-5);
}

// (c) Hand-built q and k: one-hot keys by segment index (k_t = e_{t mod L}); head 0 is an
// induction head (q_p = a e_{(p+1) mod L}), head 1 an echo head (q_p = a e_{p mod L}).
// Expected scores follow in closed form from the count of matching visible keys.
TEST(RazorProbeCacheTest, EchoAndInductionOnHandBuiltHeads) {
  constexpr int kL = 8, kR = 4, kN = kL * kR, kHd = kL;
  constexpr double kA = 12.0;
  ASSERT_OK_AND_ASSIGN(auto dense, model::DenseKvCache::Create({1, 2, 1, kHd, kN, 0}));
  ASSERT_OK_AND_ASSIGN(auto probe, RazorProbeCache::Create(std::move(dense), {kL, kL, nullptr}));
  constexpr int kStride = 4 * kHd;  // q head 0, q head 1, k, v
  std::vector<float> qkv(kN * kStride, 0.0f), out(kN * 2 * kHd);
  for (int p = 0; p < kN; ++p) {
    qkv[p * kStride + (p + 1) % kL] = static_cast<float>(kA);     // head 0
    qkv[p * kStride + kHd + p % kL] = static_cast<float>(kA);     // head 1
    qkv[p * kStride + 2 * kHd + p % kL] = 1.0f;                   // key
  }
  model::LayerQkv in{kN, kStride, &qkv[0], &qkv[2 * kHd], &qkv[3 * kHd]};
  // A step rolled back leaves no scores behind.
  ASSERT_OK(probe->AppendAndAttend(0, in, out.data(), nullptr));
  probe->Truncate(0);
  ASSERT_OK(probe->Commit(0));
  EXPECT_EQ(probe->num_scored_queries(), 0);
  EXPECT_THAT(probe->MeanInduction(), ElementsAre(0.0, 0.0));

  ASSERT_OK(probe->AppendAndAttend(0, in, out.data(), nullptr));
  ASSERT_OK(probe->Commit(kN));
  const double e = std::exp(kA / std::sqrt(double{kHd}));
  double induction0 = 0, echo0 = 0, induction1 = 0, echo1 = 0;
  for (int p = kL; p < kN; ++p) {
    // Visible keys t <= p matching (p + 1) mod L: t = p + 1 - m L, m >= 1.
    const int c0 = (p + 1) / kL;
    const double z0 = c0 * e + (p + 1 - c0);
    induction0 += e / z0;
    echo0 += 1.0 / z0;
    // Matching p mod L: t = p - m L, m >= 0 (itself included).
    const int c1 = p / kL + 1;
    const double z1 = c1 * e + (p + 1 - c1);
    echo1 += e / z1;
    induction1 += 1.0 / z1;
  }
  const int scored = kN - kL;
  EXPECT_EQ(probe->num_scored_queries(), scored);
  const std::vector<double> ind = probe->MeanInduction(), echo = probe->MeanEcho();
  EXPECT_NEAR(ind[0], induction0 / scored, 1e-9);
  EXPECT_NEAR(echo[0], echo0 / scored, 1e-9);
  EXPECT_NEAR(ind[1], induction1 / scored, 1e-9);
  EXPECT_NEAR(echo[1], echo1 / scored, 1e-9);
  EXPECT_GT(ind[0], 0.4);  // the induction head is an induction head
  EXPECT_GT(echo[1], 0.2);
  EXPECT_LT(ind[1], 0.05);
}

TEST(RazorProbeCacheTest, ScoreQueryRowPicksTheTwoKeys) {
  // Keys 3..9 visible for query 9, L = 4: echo key 5, induction key 6.
  const std::vector<double> row = {0.01, 0.02, 0.4, 0.3, 0.07, 0.1, 0.1};
  EchoInduction s = ScoreQueryRow(row, 3, 9, 4);
  EXPECT_DOUBLE_EQ(s.echo, 0.4);
  EXPECT_DOUBLE_EQ(s.induction, 0.3);
  // L = 7: echo key 2 is outside the window (0), induction key 3 is the first key.
  s = ScoreQueryRow(row, 3, 9, 7);
  EXPECT_DOUBLE_EQ(s.echo, 0.0);
  EXPECT_DOUBLE_EQ(s.induction, 0.01);
  s = ScoreQueryRow(row, 3, 9, 9);  // both outside
  EXPECT_DOUBLE_EQ(s.echo, 0.0);
  EXPECT_DOUBLE_EQ(s.induction, 0.0);
}

// (d) Selection.
TEST(RazorSelectionTest, MaxOverGqaGroups) {
  // 2 layers x 4 query heads, 2 KV heads: groups {0,1}, {2,3}.
  const std::vector<double> q = {0.1, 0.5, 0.3, 0.2, 0.9, 0.0, 0.0, 0.05};
  ASSERT_OK_AND_ASSIGN(std::vector<double> kv, MaxOverGqaGroups(q, 4, 2));
  EXPECT_THAT(kv, ElementsAre(0.5, 0.3, 0.9, 0.05));
  EXPECT_THAT(MaxOverGqaGroups(q, 4, 3), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MaxOverGqaGroups(q, 3, 3), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MaxOverGqaGroups(q, 4, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RazorSelectionTest, TopFractionsUnion) {
  // H = 8 (4 layers x 2): induction 15% -> ceil(1.2) = 2 heads, echo 5% -> ceil(0.4) = 1.
  const std::vector<double> induction = {0.01, 0.6, 0.02, 0.03, 0.4, 0.0, 0.1, 0.05};
  const std::vector<double> echo = {0.0, 0.0, 0.0, 0.3, 0.0, 0.2, 0.0, 0.0};
  ASSERT_OK_AND_ASSIGN(HeadList heads, SelectRetrievalHeads(echo, induction, 2, 0.15, 0.05));
  EXPECT_EQ(heads, (HeadList{{0, 1}, {1, 1}, {2, 0}}));
  // Overlap: echo's top head is also an induction head: the union has 2.
  const std::vector<double> echo2 = {0.0, 0.9, 0.0, 0.3, 0.0, 0.2, 0.0, 0.0};
  ASSERT_OK_AND_ASSIGN(heads, SelectRetrievalHeads(echo2, induction, 2, 0.15, 0.05));
  EXPECT_EQ(heads, (HeadList{{0, 1}, {2, 0}}));
  ASSERT_OK_AND_ASSIGN(heads, SelectRetrievalHeads(echo, induction, 2, 0.0, 0.0));
  EXPECT_TRUE(heads.empty());
  ASSERT_OK_AND_ASSIGN(heads, SelectRetrievalHeads(echo, induction, 2, 1.0, 0.0));
  EXPECT_EQ(heads.size(), 8u);
  // 0.15 * 20 = 3.0000000000000004 in double: still 3 heads, not 4.
  std::vector<double> twenty(20);
  for (int i = 0; i < 20; ++i) twenty[i] = i;
  ASSERT_OK_AND_ASSIGN(heads, SelectRetrievalHeads(std::vector<double>(20, 0.0), twenty, 4,
                                                   0.15, 0.0));
  EXPECT_EQ(heads, (HeadList{{4, 1}, {4, 2}, {4, 3}}));
}

TEST(RazorSelectionTest, TiesGoToTheLowerHead) {
  const std::vector<double> flat(6, 0.25);
  ASSERT_OK_AND_ASSIGN(HeadList heads, SelectRetrievalHeads(flat, flat, 2, 0.34, 0.0));
  EXPECT_EQ(heads, (HeadList{{0, 0}, {0, 1}, {1, 0}}));  // ceil(0.34 * 6) = 3
  const std::vector<double> induction = {0.1, 0.5, 0.5, 0.5, 0.0, 0.0};
  ASSERT_OK_AND_ASSIGN(heads, SelectRetrievalHeads(flat, induction, 2, 0.34, 0.0));
  EXPECT_EQ(heads, (HeadList{{0, 1}, {1, 0}, {1, 1}}));
  ASSERT_OK_AND_ASSIGN(heads, SelectRetrievalHeads(induction, flat, 2, 0.0, 0.2));
  EXPECT_EQ(heads, (HeadList{{0, 1}, {1, 0}}));  // ceil(1.2) = 2 by echo
}

TEST(RazorSelectionTest, BadSelectionInputs) {
  const std::vector<double> four(4, 0.1), three(3, 0.1);
  EXPECT_THAT(SelectRetrievalHeads(four, three, 1, 0.1, 0.1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SelectRetrievalHeads(three, three, 2, 0.1, 0.1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SelectRetrievalHeads({}, {}, 1, 0.1, 0.1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SelectRetrievalHeads(four, four, 2, 1.5, 0.1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SelectRetrievalHeads(four, four, 2, 0.1, -0.1),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---- the whole pass on a tiny random checkpoint --------------------------------------------

class RazorCalibrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ::kvspan::testing::TempDir();
    model_ = LoadRandomModel(dir_->path(), {}).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  static RazorCalibrationOptions Small() {
    RazorCalibrationOptions o;
    o.num_trials = 2;
    o.segment_tokens = 16;
    o.repeats = 3;
    o.induction_fraction = 0.25;  // H = 4: 1 head
    o.echo_fraction = 0.25;
    o.seed = 7;
    return o;
  }
  static ::kvspan::testing::TempDir* dir_;
  static model::Model* model_;
};
::kvspan::testing::TempDir* RazorCalibrationTest::dir_ = nullptr;
model::Model* RazorCalibrationTest::model_ = nullptr;

TEST_F(RazorCalibrationTest, TrialTokens) {
  ASSERT_NE(model_, nullptr);
  const model::ModelConfig& cfg = model_->config();
  RazorCalibrationOptions o = Small();
  o.excluded_token_ids = {50, 51};
  const std::vector<int32_t> t0 = RazorTrialTokens(o, cfg, 0);
  ASSERT_EQ(t0.size(), 1u + 16 * 3);
  EXPECT_EQ(t0[0], cfg.bos_token_ids.front());
  std::vector<int32_t> segment(t0.begin() + 1, t0.begin() + 17);
  for (int r = 1; r < 3; ++r) {
    EXPECT_TRUE(std::equal(segment.begin(), segment.end(), t0.begin() + 1 + 16 * r));
  }
  for (int32_t id : segment) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, cfg.vocab_size);
    for (int32_t bad : {1, 2, 3, 50, 51}) EXPECT_NE(id, bad);  // bos, eos (+ generation eos), excluded
  }
  std::sort(segment.begin(), segment.end());
  EXPECT_EQ(std::adjacent_find(segment.begin(), segment.end()), segment.end()) << "distinct ids";
  EXPECT_EQ(RazorTrialTokens(o, cfg, 0), t0);  // seeded
  EXPECT_NE(RazorTrialTokens(o, cfg, 1), t0);
  o.seed = 8;
  EXPECT_NE(RazorTrialTokens(o, cfg, 0), t0);
}

TEST_F(RazorCalibrationTest, ScoresAndSelectionAreConsistent) {
  ASSERT_NE(model_, nullptr);
  ASSERT_OK_AND_ASSIGN(RazorCalibration c, CalibrateRazor(*model_, Small()));
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  ASSERT_EQ(c.echo.size(), 8u);
  ASSERT_EQ(c.kv_induction.size(), 4u);
  for (size_t i = 0; i < c.echo.size(); ++i) {
    EXPECT_GE(c.echo[i], 0.0);
    EXPECT_LE(c.echo[i] + c.induction[i], 1.0 + 1e-9);
    EXPECT_GT(c.echo[i] + c.induction[i], 0.0);
  }
  double uniform = 0.0;  // bos + 16 x 3: queries 17..48 see p + 1 keys
  for (int p = 17; p < 49; ++p) uniform += 1.0 / (p + 1) / 32;
  EXPECT_NEAR(c.uniform_score, uniform, 1e-12);
  ASSERT_OK_AND_ASSIGN(std::vector<double> kv_echo, MaxOverGqaGroups(c.echo, 4, 2));
  EXPECT_EQ(c.kv_echo, kv_echo);
  ASSERT_OK_AND_ASSIGN(HeadList want,
                       SelectRetrievalHeads(c.kv_echo, c.kv_induction, 2, 0.25, 0.25));
  EXPECT_EQ(c.retrieval_heads, want);
  EXPECT_GE(c.retrieval_heads.size(), 1u);
  EXPECT_LE(c.retrieval_heads.size(), 2u);
  // Deterministic: the same options give the same scores.
  ASSERT_OK_AND_ASSIGN(RazorCalibration again, CalibrateRazor(*model_, Small()));
  EXPECT_EQ(again.induction, c.induction);
  EXPECT_EQ(again.echo, c.echo);
}

TEST_F(RazorCalibrationTest, HeadsFileRoundTripsThroughParsePolicy) {
  ASSERT_NE(model_, nullptr);
  ASSERT_OK_AND_ASSIGN(RazorCalibration c, CalibrateRazor(*model_, Small()));
  for (const HeadList& heads : {c.retrieval_heads, HeadList{}, HeadList{{0, 1}, {1, 0}}}) {
    c.retrieval_heads = heads;
    const std::string path = dir_->Sub("heads.txt");
    ASSERT_OK(WriteRetrievalHeadsFile(path, c, "tiny\nrandom"));
    ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(path));
    EXPECT_EQ(text, RetrievalHeadsFileText(c, "tiny\nrandom"));
    EXPECT_EQ(text.rfind("# RazorAttention", 0), 0u);
    EXPECT_NE(text.find("# model: tiny random (fingerprint " + c.model_fingerprint), std::string::npos);
    EXPECT_NE(text.find("segment_tokens=16 repeats=3"), std::string::npos);
    ASSERT_OK_AND_ASSIGN(Policy from_file, ParsePolicy("razor(retrieval=@" + path + ")/bf16"));
    ASSERT_EQ(from_file.reducers.size(), 1u);
    EXPECT_EQ(from_file.reducers[0].Get("retrieval").heads, heads);
    ASSERT_OK_AND_ASSIGN(Policy inline_form,
                         ParsePolicy("razor(retrieval=" + RetrievalHeadsInline(heads) + ")/bf16"));
    EXPECT_EQ(inline_form, from_file);
  }
  EXPECT_EQ(RetrievalHeadsInline({}), "none");
  EXPECT_EQ(RetrievalHeadsInline(HeadList{{0, 1}, {2, 0}}), "0.1:2.0");
}

TEST_F(RazorCalibrationTest, UnwritableHeadsFile) {
  ASSERT_NE(model_, nullptr);
  RazorCalibration c;
  EXPECT_THAT(WriteRetrievalHeadsFile(dir_->Sub("no/such/dir/heads.txt"), c, "m"),
              StatusIs(absl::StatusCode::kNotFound));
}

// (e) Bad options.
TEST_F(RazorCalibrationTest, BadOptionsAreInvalidArgument) {
  ASSERT_NE(model_, nullptr);
  const model::ModelConfig& cfg = model_->config();
  EXPECT_OK(ValidateRazorCalibrationOptions(Small(), cfg));
  std::vector<std::pair<std::string, RazorCalibrationOptions>> bad;
  auto add = [&](const std::string& what, auto edit) {
    RazorCalibrationOptions o = Small();
    edit(o);
    bad.emplace_back(what, o);
  };
  add("num_trials", [](auto& o) { o.num_trials = 0; });
  add("segment_tokens", [](auto& o) { o.segment_tokens = 1; });
  add("repeats", [](auto& o) { o.repeats = 1; });
  add("induction_fraction", [](auto& o) { o.induction_fraction = -0.01; });
  add("induction_fraction", [](auto& o) { o.induction_fraction = NAN; });
  add("echo_fraction", [](auto& o) { o.echo_fraction = 1.5; });
  add("excluded token id", [](auto& o) { o.excluded_token_ids = {97}; });
  add("drawable ids", [](auto& o) { o.segment_tokens = 95; });  // 97 - bos - 2 eos = 94
  add("max_position_embeddings", [](auto& o) { o.segment_tokens = 64, o.repeats = 16; });
  add("max_position_embeddings", [](auto& o) { o.segment_tokens = 90, o.repeats = 1 << 30; });
  for (size_t i = 0; i < bad.size(); ++i) {
    const auto& [what, o] = bad[i];
    // The first six need no model; the rest depend on the vocabulary or the context length.
    if (i < 6) {
      EXPECT_THAT(ValidateRazorCalibrationOptions(o),
                  StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr(what)));
    } else {
      EXPECT_OK(ValidateRazorCalibrationOptions(o)) << what;
    }
    EXPECT_THAT(ValidateRazorCalibrationOptions(o, cfg),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr(what)));
    EXPECT_THAT(CalibrateRazor(*model_, o), StatusIs(absl::StatusCode::kInvalidArgument)) << what;
  }
  RazorCalibrationOptions ok = Small();
  ok.segment_tokens = 94;
  ok.repeats = 2;
  EXPECT_OK(ValidateRazorCalibrationOptions(ok, cfg));
}

TEST(RazorProbeCacheTest, BadProbeOptionsAreInvalidArgument) {
  auto dense = [] { return model::DenseKvCache::Create({1, 2, 1, 4, 16, 0}).value(); };
  EXPECT_THAT(RazorProbeCache::Create(nullptr, {4, 4, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RazorProbeCache::Create(dense(), {1, 4, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RazorProbeCache::Create(dense(), {4, 2, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(RazorProbeCache::Create(dense(), {4, 3, nullptr}).status());
}

}  // namespace
}  // namespace kvspan::kvcache
