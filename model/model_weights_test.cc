// Model::Load's weight formats (ModelOptions::weights) on random checkpoints: the format
// kept in memory, the bytes it takes, and the logits against the fp32 expansion.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "common/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/weight_matrix.h"
#include "model/model.h"
#include "model/testing/random_checkpoint.h"

namespace kvspan::model {
namespace {

using ::kvspan::model::testing::RandomCheckpointOptions;
using ::kvspan::model::testing::WriteRandomCheckpoint;
using ::kvspan::testing::StatusIs;
using ::kvspan::testing::TempDir;
using ::testing::HasSubstr;
using kernels::WeightFormat;

// Logits of a 20-token prefill (several rows of x per tile)
// followed by 3 single-token decode steps, concatenated.
std::vector<float> PrefillThenDecode(const Model& model) {
  std::vector<float> all, logits;
  auto cache = model.NewDenseCache(64);
  EXPECT_TRUE(cache.ok());
  std::vector<int32_t> prompt;
  for (int i = 0; i < 20; ++i) prompt.push_back((i * 7 + 3) % model.config().vocab_size);
  ForwardItem item{.tokens = prompt, .cache = cache->get(), .logits = &logits};
  EXPECT_OK(model.Forward(absl::MakeSpan(&item, 1)));
  all = logits;
  for (int32_t t : {5, 11, 42}) {
    ForwardItem step{.tokens = absl::MakeConstSpan(&t, 1), .cache = cache->get(), .logits = &logits};
    EXPECT_OK(model.Forward(absl::MakeSpan(&step, 1)));
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
  return d;
}

class ModelWeightsTest : public ::testing::Test {
 protected:
  std::unique_ptr<Model> Load(DType dtype, WeightsMode mode, int group_size = 32, bool int4_grid = false) {
    RandomCheckpointOptions o;
    o.dtype = dtype;
    o.int4_grid = int4_grid;
    o.num_layers = 2;
    EXPECT_OK(WriteRandomCheckpoint(dir_.path(), o));
    auto model = Model::Load(dir_.path(), {.num_threads = 2, .weights = {mode, group_size}});
    EXPECT_OK(model.status());
    return model.ok() ? *std::move(model) : nullptr;
  }
  TempDir dir_;
};

// The random checkpoint's shape (model_load_test.cc): hidden 64, q 64, kv 32, inter 160,
// vocab 97, untied, 2 layers.
constexpr int64_t kMatrixElements = 2 * ((64 + 2 * 32) * 64 + 64 * 64 + 3 * 160 * 64) + 97 * 64;
constexpr int64_t kNormFloats = 2 * 2 * 64 + 64;
constexpr int64_t kMatrixRows = 2 * ((64 + 2 * 32) + 64 + 2 * 160 + 64) + 97;

TEST_F(ModelWeightsTest, AutoKeepsTheCheckpointDtype) {
  for (auto [dtype, format, bytes] : {std::tuple{DType::kF32, WeightFormat::kF32, 4},
                                      std::tuple{DType::kBF16, WeightFormat::kBF16, 2},
                                      std::tuple{DType::kF16, WeightFormat::kF16, 2}}) {
    std::unique_ptr<Model> model = Load(dtype, WeightsMode::kAuto);
    ASSERT_NE(model, nullptr);
    EXPECT_EQ(model->weight_format(), format) << DTypeName(dtype);
    EXPECT_EQ(model->weight_bytes(), bytes * kMatrixElements + 4 * kNormFloats) << DTypeName(dtype);
    EXPECT_EQ(model->weight_memory_bytes(), model->weight_bytes() + bytes * 97 * 64) << DTypeName(dtype);
  }
}

TEST_F(ModelWeightsTest, ExplicitFormatsConvert) {
  std::unique_ptr<Model> f32 = Load(DType::kBF16, WeightsMode::kF32);
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(f32->weight_format(), WeightFormat::kF32);
  EXPECT_EQ(f32->weight_bytes(), 4 * kMatrixElements + 4 * kNormFloats);
  std::unique_ptr<Model> int8 = Load(DType::kBF16, WeightsMode::kInt8);
  ASSERT_NE(int8, nullptr);
  EXPECT_EQ(int8->weight_format(), WeightFormat::kInt8);
  // One byte per element plus an fp32 scale and an int32 row sum per matrix row.
  EXPECT_EQ(int8->weight_bytes(), kMatrixElements + 8 * kMatrixRows + 4 * kNormFloats);
  std::unique_ptr<Model> bf16 = Load(DType::kF32, WeightsMode::kBF16);
  ASSERT_NE(bf16, nullptr);
  EXPECT_EQ(bf16->weight_format(), WeightFormat::kBF16);
  // int4: 32 bytes per 64 columns (rounded up) plus an fp16 scale per group, per row, the
  // rows rounded up to whole panels of kInt4PanelRows (16).
  for (int group : {32, 64}) {
    std::unique_ptr<Model> int4 = Load(DType::kBF16, WeightsMode::kInt4, group);
    ASSERT_NE(int4, nullptr);
    EXPECT_EQ(int4->weight_format(), WeightFormat::kInt4);
    EXPECT_EQ(int4->weight_format_label(), "int4-g" + std::to_string(group));
    auto bytes = [group](int64_t rows, int64_t cols) {
      constexpr int64_t kPanel = kernels::kInt4PanelRows;
      return (rows + kPanel - 1) / kPanel * kPanel * ((cols + 63) / 64 * 32 + (cols + group - 1) / group * 2);
    };
    const int64_t layer = bytes(64 + 2 * 32, 64) + bytes(64, 64) + bytes(2 * 160, 64) + bytes(64, 160);
    EXPECT_EQ(int4->weight_bytes(), 2 * layer + bytes(97, 64) + 4 * kNormFloats) << group;
  }
}

// bf16 and fp16 checkpoints: the kept format holds the fp32 expansion's values exactly, so
// the logits differ only by fp32 summation order (measured < 1e-5 here; bound 1e-4).
TEST_F(ModelWeightsTest, HalfFormatsMatchTheFp32Expansion) {
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    std::unique_ptr<Model> kept = Load(dtype, WeightsMode::kAuto);
    std::unique_ptr<Model> f32 = Load(dtype, WeightsMode::kF32);
    ASSERT_NE(kept, nullptr);
    ASSERT_NE(f32, nullptr);
    EXPECT_LE(MaxAbsDiff(PrefillThenDecode(*kept), PrefillThenDecode(*f32)), 1e-4) << DTypeName(dtype);
  }
}

// int8: per-row weight quantization and per-row activation quantization, each a relative
// error up to 1/254 of the row's largest magnitude per element. On this random model the
// logits (|logit| up to 3.1) move by up to 6.8e-2, 2% of the largest; the bound, 10% of
// the largest logit, still catches a wrong scale, code or row sum (each moves them by
// about the logits' own size).
TEST_F(ModelWeightsTest, Int8StaysNearTheFp32Logits) {
  std::unique_ptr<Model> int8 = Load(DType::kBF16, WeightsMode::kInt8);
  std::unique_ptr<Model> f32 = Load(DType::kBF16, WeightsMode::kF32);
  ASSERT_NE(int8, nullptr);
  ASSERT_NE(f32, nullptr);
  const std::vector<float> a = PrefillThenDecode(*int8), b = PrefillThenDecode(*f32);
  const double diff = MaxAbsDiff(a, b);
  double max_logit = 0;
  for (float v : b) max_logit = std::max(max_logit, std::abs(static_cast<double>(v)));
  std::printf("int8 vs f32: max |logit delta| = %.3g, max |logit| = %.3g\n", diff, max_logit);
  EXPECT_LE(diff, 0.1 * max_logit);
  EXPECT_GT(diff, 0.0);  // it did quantize
}

// int4 on a checkpoint whose matrices lie on the int4 grid (RandomCheckpointOptions::
// int4_grid): the quantized weights are the checkpoint's exactly, so the logits differ from
// the fp32 expansion's only by the per-row int8 activation quantization, as for int8 (the
// same 10% bound). That checks the loader (the fused qkv / gate_up rows and their group
// scales) and the kernels end to end; a wrong scale, nibble or offset moves the logits by
// about their own size. On ordinary random weights int4 moves them far more (~0.8 of 3.1
// here: 7 levels per side), so that run only checks that they stay finite and move.
TEST_F(ModelWeightsTest, Int4OnItsGridMatchesTheFp32Logits) {
  for (int group : {32, 64, 128}) {
    std::unique_ptr<Model> int4 = Load(DType::kBF16, WeightsMode::kInt4, group, /*int4_grid=*/true);
    std::unique_ptr<Model> f32 = Load(DType::kBF16, WeightsMode::kF32, 32, /*int4_grid=*/true);
    std::unique_ptr<Model> int8 = Load(DType::kBF16, WeightsMode::kInt8, 32, /*int4_grid=*/true);
    ASSERT_NE(int4, nullptr);
    ASSERT_NE(f32, nullptr);
    ASSERT_NE(int8, nullptr);
    const std::vector<float> a = PrefillThenDecode(*int4), b = PrefillThenDecode(*f32);
    double max_logit = 0;
    for (float v : b) max_logit = std::max(max_logit, std::abs(static_cast<double>(v)));
    const double diff = MaxAbsDiff(a, b);
    std::printf("int4 g=%d on its grid vs f32: max |logit delta| = %.3g (int8: %.3g), max |logit| = %.3g\n", group,
                diff, MaxAbsDiff(PrefillThenDecode(*int8), b), max_logit);
    EXPECT_LE(diff, 0.1 * max_logit) << group;
  }
  std::unique_ptr<Model> int4 = Load(DType::kBF16, WeightsMode::kInt4);
  std::unique_ptr<Model> f32 = Load(DType::kBF16, WeightsMode::kF32);
  ASSERT_NE(int4, nullptr);
  ASSERT_NE(f32, nullptr);
  const double diff = MaxAbsDiff(PrefillThenDecode(*int4), PrefillThenDecode(*f32));
  std::printf("int4 g=32 on random weights vs f32: max |logit delta| = %.3g\n", diff);
  EXPECT_GT(diff, 0.0);
  EXPECT_TRUE(std::isfinite(diff));
}

// The fingerprint (the cache store's key and the roles' peer check) tells quantized
// weights apart from the checkpoint's, and Load agrees with LoadConfig.
TEST_F(ModelWeightsTest, FingerprintNamesValueChangingFormats) {
  std::unique_ptr<Model> kept = Load(DType::kBF16, WeightsMode::kAuto);
  ASSERT_NE(kept, nullptr);
  const std::string dir = dir_.path();
  auto fingerprint = [&](WeightsChoice w) {
    absl::StatusOr<ModelConfig> c = Model::LoadConfig(dir, w);
    EXPECT_OK(c.status());
    return c.ok() ? c->fingerprint : std::string();
  };
  const std::string base = fingerprint({});
  EXPECT_EQ(kept->config().fingerprint, base);
  EXPECT_EQ(fingerprint({WeightsMode::kF32}), base);   // exact
  EXPECT_EQ(fingerprint({WeightsMode::kBF16}), base);  // the checkpoint's own dtype
  const std::string int8 = fingerprint({WeightsMode::kInt8});
  const std::string int4 = fingerprint({WeightsMode::kInt4, 32});
  EXPECT_NE(int8, base);
  EXPECT_NE(int4, base);
  EXPECT_NE(int4, int8);
  EXPECT_NE(fingerprint({WeightsMode::kInt4, 64}), int4);
  std::unique_ptr<Model> quantized = Load(DType::kBF16, WeightsMode::kInt4, 32);
  ASSERT_NE(quantized, nullptr);
  EXPECT_EQ(quantized->config().fingerprint, int4);
  EXPECT_THAT(Model::LoadConfig(dir, {WeightsMode::kInt4, 48}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--weights-group 48")));
  EXPECT_THAT(Model::Load(dir, {.weights = {WeightsMode::kInt4, 0}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiple of 32")));
}

TEST(WeightsModeTest, ParsesNamesAndRejectsOthers) {
  for (WeightsMode mode : {WeightsMode::kAuto, WeightsMode::kF32, WeightsMode::kBF16, WeightsMode::kInt8,
                           WeightsMode::kInt4}) {
    ASSERT_OK_AND_ASSIGN(WeightsMode parsed, ParseWeightsMode(WeightsModeName(mode)));
    EXPECT_EQ(parsed, mode);
  }
  EXPECT_THAT(ParseWeightsMode("int2"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("auto, f32, bf16, int8, int4")));
  WeightsChoice choice;
  FlagSet flags("test", "test");
  AddWeightsFlag(flags, &choice);
  const char* good[] = {"test", "--weights=int8"};
  ASSERT_OK(flags.Parse(2, good));
  EXPECT_EQ(choice.mode, WeightsMode::kInt8);
  const char* int4[] = {"test", "--weights=int4", "--weights-group=64"};
  ASSERT_OK(flags.Parse(3, int4));
  EXPECT_EQ(choice.mode, WeightsMode::kInt4);
  EXPECT_EQ(choice.group_size, 64);
  const char* bad[] = {"test", "--weights=fp8"};
  EXPECT_THAT(flags.Parse(2, bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--weights 'fp8'")));
}

}  // namespace
}  // namespace kvspan::model
