// Runs the make_random_model binary as a separate process and loads what it wrote.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "model/model.h"
#include "common/temp_dir.h"

namespace kvspan::model {
namespace {

// Exit status of `make_random_model <args>` (stdout/stderr discarded).
int RunTool(const std::string& args) {
  const std::string command = std::string(KVSPAN_MAKE_RANDOM_MODEL) + " " + args + " >/dev/null 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(MakeRandomModelTest, WritesALoadableShardedCheckpoint) {
  ::kvspan::testing::TempDir dir;
  const std::string out = dir.Sub("qwen");
  ASSERT_EQ(RunTool("--shape tiny-qwen2 --dtype f16 --shards 2 --seed 5 --out " + out), 0);
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(out + "/model-00002-of-00002.safetensors"));
  ASSERT_OK_AND_ASSIGN(auto model, Model::Load(out, {.num_threads = 1}));
  EXPECT_EQ(model->config().architecture, Architecture::kQwen2);
  EXPECT_TRUE(model->config().tie_word_embeddings);
  ASSERT_OK_AND_ASSIGN(auto cache, model->NewDenseCache(8));
  const std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<float> logits;
  ForwardItem item{.tokens = tokens, .cache = cache.get(), .logits = &logits};
  ASSERT_OK(model->Forward(absl::MakeSpan(&item, 1)));
  EXPECT_EQ(logits.size(), static_cast<size_t>(model->config().vocab_size));
}

TEST(MakeRandomModelTest, BadFlagsAreUsageErrors) {
  ::kvspan::testing::TempDir dir;
  EXPECT_EQ(RunTool("--shape llama-70b --out " + dir.Sub("x")), 2);
  EXPECT_EQ(RunTool("--shape tiny-llama --dtype f8 --out " + dir.Sub("x")), 2);
  EXPECT_EQ(RunTool("--shape tiny-llama"), 2);  // no --out
  EXPECT_EQ(RunTool("--no-such-flag"), 2);
  // A tokenizer with more ids (4096) than the shape's vocabulary (97) cannot be padded to it.
  EXPECT_EQ(RunTool("--shape tiny-llama --tokenizer-from " + std::string(KVSPAN_SOURCE_DIR) +
                    "/models/kvspan-brown --out " + dir.Sub("y")),
            2);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("y") + "/model.safetensors")) << "checked before the weights";
  EXPECT_EQ(RunTool("--shape tiny-llama --tokenizer-from " + dir.Sub("none") + " --out " + dir.Sub("z")), 2);
}

}  // namespace
}  // namespace kvspan::model
