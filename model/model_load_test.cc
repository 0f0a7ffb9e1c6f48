// Model::Load on random checkpoints: every loader error has its status code, and
// Forward's request errors leave caches unchanged.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/cpu_features.h"
#include "kernels/cpu_isa.h"
#include "model/model.h"
#include "model/testing/random_checkpoint.h"
#include "model/testing/safetensors_writer.h"
#include "common/temp_dir.h"
#include "nlohmann/json.hpp"

namespace kvspan::model {
namespace {

using ::kvspan::model::testing::RandomCheckpointConfigJson;
using ::kvspan::model::testing::RandomCheckpointOptions;
using ::kvspan::testing::TempDir;
using ::kvspan::model::testing::WriteRandomCheckpoint;
using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr ModelOptions kTwoThreads{.num_threads = 2};

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

class ModelLoadTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(WriteRandomCheckpoint(dir_.path(), options_)); }
  void EditConfig(const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(RandomCheckpointConfigJson(options_));
    edit(j);
    WriteText(dir_.Sub("config.json"), j.dump());
  }

  RandomCheckpointOptions options_;
  TempDir dir_;
};

TEST_F(ModelLoadTest, LoadsConfigAndGenerationConfig) {
  ASSERT_OK_AND_ASSIGN(auto model, Model::Load(dir_.path(), kTwoThreads));
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.vocab_size, options_.vocab_size);
  EXPECT_THAT(c.bos_token_ids, ElementsAre(1));
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2, 3));  // 3 from generation_config.json
  const int64_t h = 64, q = 64, kv = 32, inter = 160, vocab = 97;
  const int64_t per_layer = 2 * h + (q + 2 * kv) * h + h * q + 3 * inter * h;
  EXPECT_EQ(model->weight_bytes(), 4 * (2 * per_layer + h + vocab * h));
}

TEST_F(ModelLoadTest, FingerprintDependsOnWeightsLayout) {
  ASSERT_OK_AND_ASSIGN(auto a, Model::Load(dir_.path(), kTwoThreads));
  ASSERT_OK_AND_ASSIGN(auto b, Model::Load(dir_.path(), kTwoThreads));
  EXPECT_EQ(a->config().fingerprint, b->config().fingerprint);
  TempDir other;
  RandomCheckpointOptions o = options_;
  o.dtype = DType::kBF16;  // same config.json up to torch_dtype, different headers
  ASSERT_OK(WriteRandomCheckpoint(other.path(), o));
  ASSERT_OK_AND_ASSIGN(auto c, Model::Load(other.path(), kTwoThreads));
  EXPECT_NE(a->config().fingerprint, c->config().fingerprint);
}

TEST_F(ModelLoadTest, MissingConfigIsNotFound) {
  std::filesystem::remove(dir_.Sub("config.json"));
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads), StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
}

TEST_F(ModelLoadTest, MissingSafetensorsIsNotFound) {
  std::filesystem::remove(dir_.Sub("model.safetensors"));
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads), StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.safetensors")));
}

TEST_F(ModelLoadTest, MissingShardIsNotFound) {
  TempDir sharded;
  RandomCheckpointOptions o = options_;
  o.num_shards = 3;
  ASSERT_OK(WriteRandomCheckpoint(sharded.path(), o));
  ASSERT_OK(Model::Load(sharded.path(), kTwoThreads).status());
  std::filesystem::remove(sharded.Sub("model-00002-of-00003.safetensors"));
  EXPECT_THAT(Model::Load(sharded.path(), kTwoThreads), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ModelLoadTest, TruncatedSafetensorsIsDataLoss) {
  const std::string path = dir_.Sub("model.safetensors");
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

TEST_F(ModelLoadTest, TensorOfWrongShapeIsInvalidArgument) {
  EditConfig([](nlohmann::json& j) { j["intermediate_size"] = 128; });  // the files hold 160
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gate_proj.weight has shape [160, 64]")));
}

TEST_F(ModelLoadTest, TensorOfWrongDtypeIsInvalidArgument) {
  // Rewrite model.safetensors with model.norm.weight stored as I32.
  const std::string path = dir_.Sub("model.safetensors");
  std::vector<testing::TensorSpec> specs;
  std::map<std::string, std::vector<float>> values;
  {
    ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
    for (const auto& [name, info] : file->tensors()) {
      specs.push_back({name, name == "model.norm.weight" ? DType::kI32 : info.dtype, info.shape});
      values[name].resize(info.num_elements());
      ASSERT_OK(ConvertToFloat(info, absl::MakeSpan(values[name])));
    }
  }
  ASSERT_OK(testing::WriteSafetensors(path, specs, [&](const testing::TensorSpec& s, absl::Span<float> out) {
    std::copy(values[s.name].begin(), values[s.name].end(), out.begin());
  }));
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model.norm.weight has dtype I32")));
}

TEST_F(ModelLoadTest, MissingTensorIsNotFound) {
  TempDir tied;
  RandomCheckpointOptions o = options_;
  o.tie_word_embeddings = true;  // no lm_head.weight in the file...
  ASSERT_OK(WriteRandomCheckpoint(tied.path(), o));
  WriteText(tied.Sub("config.json"), RandomCheckpointConfigJson(options_));  // ...but the config wants one
  EXPECT_THAT(Model::Load(tied.path(), kTwoThreads), StatusIs(absl::StatusCode::kNotFound, HasSubstr("lm_head.weight")));
}

TEST_F(ModelLoadTest, UnknownArchitectureIsInvalidArgument) {
  EditConfig([](nlohmann::json& j) { j["architectures"] = {"FalconForCausalLM"}; });
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("FalconForCausalLM")));
}

TEST_F(ModelLoadTest, ConfigFieldOutOfRangeIsInvalidArgument) {
  EditConfig([](nlohmann::json& j) { j["num_hidden_layers"] = -2; });
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_hidden_layers")));
}

TEST_F(ModelLoadTest, BadGenerationConfigIsInvalidArgument) {
  WriteText(dir_.Sub("generation_config.json"), R"({"eos_token_id": [2, 500]})");
  EXPECT_THAT(Model::Load(dir_.path(), kTwoThreads), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("500")));
}

TEST_F(ModelLoadTest, NegativeThreadCountIsInvalidArgument) {
  EXPECT_THAT(Model::Load(dir_.path(), {.num_threads = -1}), StatusIs(absl::StatusCode::kInvalidArgument));
}

// ModelOptions::cpu_isa: an ISA this CPU lacks is refused by name; one it has is the one the
// model's matrix kernels run (bf16 weights through vdpbf16ps round x to bf16, so their logits
// differ from the exact kernels', by a little); unset is the process's choice.
TEST_F(ModelLoadTest, CpuIsaOptionIsCheckedAndRun) {
  TempDir bf16_dir;
  RandomCheckpointOptions o = options_;
  o.dtype = DType::kBF16;
  ASSERT_OK(WriteRandomCheckpoint(bf16_dir.path(), o));
  ASSERT_OK_AND_ASSIGN(auto unset, Model::Load(bf16_dir.path(), kTwoThreads));
  EXPECT_EQ(unset->cpu_isa(), kernels::SelectedCpuIsa().isa);
  const std::vector<int32_t> tokens = {1, 5, 9, 33, 60, 7};
  auto logits_of = [&](const Model& m) {
    std::vector<float> logits;
    auto cache = m.NewDenseCache(16);
    EXPECT_OK(cache.status());
    ForwardItem item{.tokens = tokens, .cache = cache->get(), .logits_mode = LogitsMode::kAllTokens, .logits = &logits};
    EXPECT_OK(m.Forward(absl::MakeSpan(&item, 1)));
    return logits;
  };
  const std::vector<float> exact = logits_of(*unset);
  double max_logit = 0;
  for (float v : exact) max_logit = std::max(max_logit, std::abs(static_cast<double>(v)));
  const CpuFeatures cpu = DetectCpuFeatures();
  for (kernels::CpuIsa isa : {kernels::CpuIsa::kAvx2, kernels::CpuIsa::kAvx512, kernels::CpuIsa::kAvx512Bf16Dot,
                              kernels::CpuIsa::kAmx}) {
    const std::string name(kernels::CpuIsaName(isa));
    ModelOptions options = kTwoThreads;
    options.cpu_isa = isa;
    if (!kernels::CpuSupportsIsa(cpu, isa)) {
      EXPECT_THAT(Model::Load(bf16_dir.path(), options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(name)));
      continue;
    }
    ASSERT_OK_AND_ASSIGN(auto m, Model::Load(bf16_dir.path(), options));
    EXPECT_EQ(m->cpu_isa(), isa);
    const std::vector<float> got = logits_of(*m);
    ASSERT_EQ(got.size(), exact.size());
    double max_diff = 0;
    for (size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - exact[i]));
    if (isa == kernels::CpuIsa::kAvx512Bf16Dot && kernels::SelectedCpuIsa().isa != isa) {
      // x rounded to bf16 (relative error <= 2^-8 per element) moves the logits.
      EXPECT_GT(max_diff, 1e-5 * max_logit) << name;
      EXPECT_LT(max_diff, 5e-2 * max_logit) << name;
    } else if (kernels::SelectedCpuIsa().isa != kernels::CpuIsa::kAvx512Bf16Dot) {
      EXPECT_LT(max_diff, 1e-4 * max_logit) << name << ": the exact kernels differ by fp32 summation order only";
    }
  }
}

// Forward's request errors, each leaving every cache as it was.
class ModelForwardErrorTest : public ModelLoadTest {
 protected:
  void SetUp() override {
    options_.max_position_embeddings = 16;
    ModelLoadTest::SetUp();
    ASSERT_OK_AND_ASSIGN(model_, Model::Load(dir_.path(), kTwoThreads));
  }
  std::unique_ptr<Model> model_;
  std::vector<float> logits_;
};

TEST_F(ModelForwardErrorTest, TokenOutsideVocabularyIsInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(16));
  for (int32_t bad : {-1, 97, 1 << 30}) {
    const std::vector<int32_t> tokens = {1, 5, bad};
    ForwardItem item{.tokens = tokens, .cache = cache.get(), .logits = &logits_};
    EXPECT_THAT(model_->Forward(absl::MakeSpan(&item, 1)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the vocabulary")));
    EXPECT_EQ(cache->num_tokens(), 0);
  }
}

TEST_F(ModelForwardErrorTest, MalformedBatchIsInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(auto cache, model_->NewDenseCache(16));
  const std::vector<int32_t> tokens = {1, 2};
  EXPECT_THAT(model_->Forward({}), StatusIs(absl::StatusCode::kInvalidArgument));
  ForwardItem empty{.tokens = {}, .cache = cache.get(), .logits = &logits_};
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&empty, 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  ForwardItem no_cache{.tokens = tokens, .cache = nullptr, .logits = &logits_};
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&no_cache, 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<ForwardItem> twice = {{.tokens = tokens, .cache = cache.get(), .logits = &logits_},
                                    {.tokens = tokens, .cache = cache.get(), .logits = &logits_}};
  EXPECT_THAT(model_->Forward(absl::MakeSpan(twice)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(cache->num_tokens(), 0);
}

TEST_F(ModelForwardErrorTest, PositionPastMaxIsInvalidArgument) {
  EXPECT_THAT(model_->NewDenseCache(17), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(model_->NewDenseCache(0), StatusIs(absl::StatusCode::kInvalidArgument));
  DenseKvCache::Options o{.num_layers = 2, .num_heads = 4, .num_kv_heads = 2, .head_dim = 16, .capacity_tokens = 64};
  ASSERT_OK_AND_ASSIGN(auto big, DenseKvCache::Create(o));
  const std::vector<int32_t> tokens(10, 4);
  ForwardItem item{.tokens = tokens, .cache = big.get(), .logits = &logits_};
  ASSERT_OK(model_->Forward(absl::MakeSpan(&item, 1)));
  EXPECT_THAT(model_->Forward(absl::MakeSpan(&item, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_position_embeddings")));
  EXPECT_EQ(big->num_tokens(), 10);
}

TEST_F(ModelForwardErrorTest, FullCacheIsResourceExhaustedAndRollsBack) {
  ASSERT_OK_AND_ASSIGN(auto small, model_->NewDenseCache(8));
  ASSERT_OK_AND_ASSIGN(auto other, model_->NewDenseCache(16));
  const std::vector<int32_t> prefix = {1, 7, 9, 11, 13, 17}, more = {19, 23, 29};
  ForwardItem first{.tokens = prefix, .cache = small.get(), .logits = &logits_};
  ASSERT_OK(model_->Forward(absl::MakeSpan(&first, 1)));
  // `other` is valid and comes first; `small` cannot take 3 more tokens.
  std::vector<float> other_logits;
  std::vector<ForwardItem> batch = {{.tokens = prefix, .cache = other.get(), .logits = &other_logits},
                                    {.tokens = more, .cache = small.get(), .logits = &logits_}};
  EXPECT_THAT(model_->Forward(absl::MakeSpan(batch)), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(small->num_tokens(), 6);
  EXPECT_EQ(other->num_tokens(), 0);
  // The rolled-back cache still works: two more tokens fit and match a fresh run.
  const std::vector<int32_t> two = {19, 23};
  ForwardItem next{.tokens = two, .cache = small.get(), .logits = &logits_};
  ASSERT_OK(model_->Forward(absl::MakeSpan(&next, 1)));
  ASSERT_OK_AND_ASSIGN(auto fresh, model_->NewDenseCache(8));
  std::vector<int32_t> all = prefix;
  all.insert(all.end(), two.begin(), two.end());
  std::vector<float> fresh_logits;
  ForwardItem whole{.tokens = all, .cache = fresh.get(), .logits = &fresh_logits};
  ASSERT_OK(model_->Forward(absl::MakeSpan(&whole, 1)));
  ASSERT_EQ(logits_.size(), fresh_logits.size());
  for (size_t i = 0; i < logits_.size(); ++i) EXPECT_NEAR(logits_[i], fresh_logits[i], 1e-4) << i;
}

// A cache whose PrepareCommit fails with a given status (the seam a compressed cache's
// compressor errors come through), in front of a dense cache.
class FailingPrepareCache final : public KvCache {
 public:
  FailingPrepareCache(KvCache* inner, absl::Status failure) : inner_(inner), failure_(std::move(failure)) {}
  int num_tokens() const override { return inner_->num_tokens(); }
  absl::Status AppendAndAttend(int layer, const LayerQkv& in, float* out, ThreadPool* pool) override {
    return inner_->AppendAndAttend(layer, in, out, pool);
  }
  absl::Status PrepareCommit(int n) override { return failure_.ok() ? inner_->PrepareCommit(n) : failure_; }
  absl::Status Commit(int n) override {
    if (!failure_.ok()) return failure_;
    return inner_->Commit(n);
  }
  void Truncate(int n) override { inner_->Truncate(n); }
  int64_t memory_bytes() const override { return inner_->memory_bytes(); }

 private:
  KvCache* inner_;
  absl::Status failure_;
};

// A PrepareCommit error comes back with its own code, and no cache of the batch commits:
// not the ones before the failing item (already prepared), not the ones after it.
TEST_F(ModelForwardErrorTest, PrepareCommitErrorKeepsItsCodeAndCommitsNoCache) {
  ASSERT_OK_AND_ASSIGN(auto a, model_->NewDenseCache(16));
  ASSERT_OK_AND_ASSIGN(auto b, model_->NewDenseCache(16));
  ASSERT_OK_AND_ASSIGN(auto c, model_->NewDenseCache(16));
  FailingPrepareCache failing(b.get(), absl::DataLossError("staged span unreadable"));
  const std::vector<int32_t> ta = {1, 5, 9}, tb = {2, 6}, tc = {3};
  std::vector<float> la, lb, lc;
  std::vector<ForwardItem> batch = {{.tokens = ta, .cache = a.get(), .logits = &la},
                                    {.tokens = tb, .cache = &failing, .logits = &lb},
                                    {.tokens = tc, .cache = c.get(), .logits = &lc}};
  EXPECT_THAT(model_->Forward(absl::MakeSpan(batch)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("staged span unreadable")));
  EXPECT_EQ(a->num_tokens(), 0);
  EXPECT_EQ(b->num_tokens(), 0);
  EXPECT_EQ(c->num_tokens(), 0);
  // The rolled-back caches take the same step (b directly) and give a fresh batch's logits.
  batch[1].cache = b.get();
  ASSERT_OK(model_->Forward(absl::MakeSpan(batch)));
  ASSERT_OK_AND_ASSIGN(auto fa, model_->NewDenseCache(16));
  ASSERT_OK_AND_ASSIGN(auto fb, model_->NewDenseCache(16));
  ASSERT_OK_AND_ASSIGN(auto fc, model_->NewDenseCache(16));
  std::vector<float> fla, flb, flc;
  std::vector<ForwardItem> fresh = {{.tokens = ta, .cache = fa.get(), .logits = &fla},
                                    {.tokens = tb, .cache = fb.get(), .logits = &flb},
                                    {.tokens = tc, .cache = fc.get(), .logits = &flc}};
  ASSERT_OK(model_->Forward(absl::MakeSpan(fresh)));
  EXPECT_EQ(la, fla);
  EXPECT_EQ(lb, flb);
  EXPECT_EQ(lc, flc);
  EXPECT_EQ(a->num_tokens(), 3);
  EXPECT_EQ(b->num_tokens(), 2);
  EXPECT_EQ(c->num_tokens(), 1);
}

}  // namespace
}  // namespace kvspan::model
