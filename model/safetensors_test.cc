#include "model/safetensors.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/float16.h"
#include "model/testing/safetensors_writer.h"
#include "common/temp_dir.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvspan::model {
namespace {

using ::kvspan::model::testing::HostTensor;
using ::kvspan::testing::TempDir;
using ::kvspan::model::testing::WriteSafetensors;
using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// A raw safetensors file: header JSON and data bytes as given.
std::string RawFile(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  return out + header + data;
}

std::map<std::string, HostTensor> SmallTensors() {
  return {{"a", {{2, 3}, {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -65504.0f}}}, {"b", {{4}, {0.5f, 0.25f, -8.0f, 1.0f}}}};
}

TEST(SafetensorsTest, RoundTripsFloatDtypes) {
  TempDir dir;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const std::string path = dir.Sub("t.safetensors");
    ASSERT_OK(WriteSafetensors(path, SmallTensors(), dtype));
    ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
    const TensorInfo* a = file->Find("a");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->dtype, dtype);
    EXPECT_THAT(a->shape, ElementsAre(2, 3));
    std::vector<float> values(6);
    ASSERT_OK(ConvertToFloat(*a, absl::MakeSpan(values)));
    // Exact in f32; in 16 bits, the value rounded to nearest even (conversions: common/float16_test.cc).
    for (int i = 0; i < 6; ++i) {
      const float v = SmallTensors()["a"].values[i];
      const float want = dtype == DType::kF32    ? v
                         : dtype == DType::kF16 ? HalfToFloat(FloatToHalf(v))
                                                : Bf16ToFloat(FloatToBf16(v));
      EXPECT_EQ(values[i], want) << DTypeName(dtype) << " " << i;
    }
    EXPECT_EQ(values[1], -2.5f);  // exact in every dtype
    EXPECT_EQ(file->Find("missing"), nullptr);
    EXPECT_THAT(ConvertToFloat(*a, absl::MakeSpan(values).subspan(1)), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST(SafetensorsTest, ReadsIntegerTensors) {
  TempDir dir;
  for (DType dtype : {DType::kI32, DType::kI64}) {
    const std::string path = dir.Sub("ids.safetensors");
    ASSERT_OK(WriteSafetensors(path, {{"ids", {{3}, {5.0f, -7.0f, 128255.0f}}}}, dtype));
    ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
    std::vector<int32_t> ids(3);
    ASSERT_OK(ConvertToInt32(*file->Find("ids"), absl::MakeSpan(ids)));
    EXPECT_THAT(ids, ElementsAre(5, -7, 128255));
    std::vector<float> f(3);
    EXPECT_THAT(ConvertToFloat(*file->Find("ids"), absl::MakeSpan(f)), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  TempDir dir;
  EXPECT_THAT(SafetensorsFile::Open(dir.Sub("nope.safetensors")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(SafetensorsCheckpoint::OpenDir(dir.path()), StatusIs(absl::StatusCode::kNotFound));
}

TEST(SafetensorsTest, TruncatedFileIsDataLoss) {
  TempDir dir;
  const std::string path = dir.Sub("t.safetensors");
  ASSERT_OK(WriteSafetensors(path, SmallTensors(), DType::kF32));
  const auto size = std::filesystem::file_size(path);
  for (uintmax_t keep : {uintmax_t{0}, uintmax_t{5}, uintmax_t{20}, size - 1}) {
    std::filesystem::copy_file(path, dir.Sub("cut.safetensors"), std::filesystem::copy_options::overwrite_existing);
    std::filesystem::resize_file(dir.Sub("cut.safetensors"), keep);
    EXPECT_THAT(SafetensorsFile::Open(dir.Sub("cut.safetensors")), StatusIs(absl::StatusCode::kDataLoss)) << keep;
  }
}

TEST(SafetensorsTest, MalformedHeaderIsDataLoss) {
  TempDir dir;
  const std::string path = dir.Sub("bad.safetensors");
  const std::string data(16, '\0');
  const std::pair<std::string, std::string> cases[] = {
      {"{not json", "not a JSON"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       "overlap"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})", "does not match"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", "past the end"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", "shape"},
      {R"({"a":{"dtype":"F32","shape":[2]}})", "data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", "begin > end"},
  };
  for (const auto& [header, message] : cases) {
    WriteBytes(path, RawFile(header, data));
    EXPECT_THAT(SafetensorsFile::Open(path), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(message))) << header;
  }
  // A header length that points past the end of the file.
  WriteBytes(path, RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data).substr(0, 30));
  EXPECT_THAT(SafetensorsFile::Open(path), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("does not fit")));
}

TEST(SafetensorsTest, UnsupportedDtypeIsInvalidArgument) {
  TempDir dir;
  const std::string path = dir.Sub("f8.safetensors");
  WriteBytes(path, RawFile(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')));
  EXPECT_THAT(SafetensorsFile::Open(path), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("F8_E4M3")));
}

class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(WriteSafetensors(dir_.Sub("model-00001-of-00002.safetensors"), {{"a", {{2}, {1, 2}}}}, DType::kF32));
    ASSERT_OK(WriteSafetensors(dir_.Sub("model-00002-of-00002.safetensors"), {{"b", {{1}, {3}}}}, DType::kBF16));
  }
  void WriteIndex(const std::string& text) { WriteBytes(dir_.Sub("model.safetensors.index.json"), text); }

  TempDir dir_;
};

TEST_F(ShardedCheckpointTest, OpensEveryShard) {
  WriteIndex(R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  ASSERT_OK_AND_ASSIGN(auto ckpt, SafetensorsCheckpoint::OpenDir(dir_.path()));
  EXPECT_EQ(ckpt->num_files(), 2);
  ASSERT_OK_AND_ASSIGN(const TensorInfo* b, ckpt->Get("b"));
  EXPECT_EQ(b->dtype, DType::kBF16);
  EXPECT_THAT(ckpt->Get("c"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("c")));
  EXPECT_THAT(ckpt->FingerprintBytes(), HasSubstr("weight_map"));
}

TEST_F(ShardedCheckpointTest, MissingShardIsNotFound) {
  WriteIndex(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00003-of-00003.safetensors"}})");
  EXPECT_THAT(SafetensorsCheckpoint::OpenDir(dir_.path()), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ShardedCheckpointTest, TensorAbsentFromItsShardIsDataLoss) {
  WriteIndex(R"({"weight_map":{"a":"model-00002-of-00002.safetensors"}})");
  EXPECT_THAT(SafetensorsCheckpoint::OpenDir(dir_.path()), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(ShardedCheckpointTest, MalformedIndexIsDataLoss) {
  WriteIndex("{\"weight_map\": ");
  EXPECT_THAT(SafetensorsCheckpoint::OpenDir(dir_.path()), StatusIs(absl::StatusCode::kDataLoss));
  WriteIndex(R"({"metadata":{}})");
  EXPECT_THAT(SafetensorsCheckpoint::OpenDir(dir_.path()), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(ShardedCheckpointTest, ShardPathOutsideTheDirectoryIsInvalidArgument) {
  WriteIndex(R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})");
  EXPECT_THAT(SafetensorsCheckpoint::OpenDir(dir_.path()), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace kvspan::model
