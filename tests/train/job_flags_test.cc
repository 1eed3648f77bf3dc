#include "worker/train/job_flags.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace ftune::train {
namespace {

absl::StatusOr<ftune::v1::JobSpec> Parse(std::vector<std::string> args) {
  CLI::App app;
  JobSpecFlags flags;
  flags.Register(&app);
  std::vector<const char*> argv = {"prog"};
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return flags.BuildSpec();
}

TEST(JobFlagsTest, FlagsFillTheSpec) {
  auto spec = Parse({"--dataset", "/d", "--layout", "ravdess", "--split", "speaker",
                     "--model", "tiny", "--labels", "a,b,c", "--epochs", "2", "--batch-size",
                     "4", "--grad-accum", "2", "--learning-rate", "1e-4", "--precision",
                     "bf16", "--schedule", "cosine", "--freeze-feature-encoder", "false",
                     "--freeze-backbone", "--output-dir", "/o", "--seed", "9", "--threads", "2"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().path(), "/d");
  EXPECT_EQ(spec->dataset().layout(), ftune::v1::DATASET_LAYOUT_RAVDESS);
  EXPECT_EQ(spec->dataset().split(), ftune::v1::SPLIT_STRATEGY_SPEAKER);
  EXPECT_EQ(spec->model(), "tiny");
  ASSERT_EQ(spec->labels_size(), 3);
  EXPECT_EQ(spec->labels(2), "c");
  EXPECT_EQ(spec->training().epochs(), 2u);
  EXPECT_EQ(spec->training().batch_size(), 4u);
  EXPECT_EQ(spec->training().grad_accum(), 2u);
  EXPECT_DOUBLE_EQ(spec->training().learning_rate(), 1e-4);
  EXPECT_EQ(spec->training().precision(), ftune::v1::PRECISION_BF16);
  EXPECT_EQ(spec->training().schedule(), ftune::v1::LR_SCHEDULE_COSINE);
  ASSERT_TRUE(spec->training().has_freeze_feature_encoder());
  EXPECT_FALSE(spec->training().freeze_feature_encoder());
  EXPECT_TRUE(spec->training().freeze_backbone());
  EXPECT_EQ(spec->training().seed(), 9u);
  EXPECT_EQ(spec->threads(), 2u);
  EXPECT_EQ(spec->output_dir(), "/o");
}

TEST(JobFlagsTest, UnsetFlagsStayUnset) {
  auto spec = Parse({"--model", "tiny"});
  ASSERT_TRUE(spec.ok());
  EXPECT_FALSE(spec->training().has_learning_rate());
  EXPECT_FALSE(spec->training().has_freeze_feature_encoder());
  EXPECT_FALSE(spec->training().has_seed());
  EXPECT_EQ(spec->training().epochs(), 0u);
}

TEST(JobFlagsTest, FlagsOverrideSpecFile) {
  const std::string dir = ftune::testing::MakeTempDir("flags");
  const std::string file = dir + "/spec.json";
  std::ofstream(file) << R"({"model": "hubert-base", "output_dir": "/x",
      "training": {"epochs": 5, "learning_rate": 3e-5, "precision": "PRECISION_FP32"},
      "dataset": {"path": "/data", "include_song": true}})";
  auto spec = Parse({"--spec", file, "--epochs", "1"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model(), "hubert-base");
  EXPECT_EQ(spec->training().epochs(), 1u);
  EXPECT_DOUBLE_EQ(spec->training().learning_rate(), 3e-5);
  EXPECT_EQ(spec->training().precision(), ftune::v1::PRECISION_FP32);
  EXPECT_TRUE(spec->dataset().include_song());
}

TEST(JobFlagsTest, BadInputIsNamed) {
  auto bad_enum = Parse({"--precision", "fp8"});
  EXPECT_EQ(bad_enum.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_enum.status().message().find("--precision"), std::string::npos);
  const std::string dir = ftune::testing::MakeTempDir("flags");
  std::ofstream(dir + "/bad.json") << R"({"modle": "tiny"})";
  auto bad_file = Parse({"--spec", dir + "/bad.json"});
  EXPECT_EQ(bad_file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_file.status().message().find("bad.json"), std::string::npos);
}

}  // namespace
}  // namespace ftune::train
