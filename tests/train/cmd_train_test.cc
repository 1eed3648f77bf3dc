// `ftworker train` and `ftworker bench` as a user runs them.
#include <sstream>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/train/synthetic.h"

namespace ftune::train {
namespace {

using ftune::testing::BinaryPath;
using ftune::testing::MakeTempDir;
using ftune::testing::RunCommand;

std::vector<nlohmann::json> JsonLines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    lines.push_back(nlohmann::json::parse(std::string(line)));
  }
  return lines;
}

TEST(CmdTrainTest, JsonEventsThenSummary) {
  const std::string data = MakeTempDir("data");
  const std::string out = MakeTempDir("out");
  testing::ToneSetOptions tones;
  tones.train_per_class = 6;
  tones.eval_per_class = 2;
  testing::MakeToneDataset(data, tones);
  auto run = RunCommand({BinaryPath("ftworker"), "train", "--dataset", data, "--layout",
                         "folders", "--model", "tiny", "--epochs", "2", "--batch-size", "4",
                         "--learning-rate", "1e-3", "--precision", "fp32", "--threads", "1",
                         "--output-dir", out, "--json"},
                        absl::Minutes(3));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  std::vector<nlohmann::json> lines = JsonLines(run->out);
  ASSERT_GE(lines.size(), 4u);
  // The recipe that applied, then the dataset.
  EXPECT_EQ(lines[0]["seq"], "1");  // int64 is a string in protobuf JSON
  EXPECT_EQ(lines[0]["log"]["message"].get<std::string>().rfind("from-scratch recipe", 0), 0u)
      << lines[0].dump();
  EXPECT_TRUE(lines[1].contains("dataset_summary")) << lines[1].dump();
  int progress = 0, evals = 0;
  for (const auto& l : lines) {
    progress += l.contains("train_progress");
    evals += l.contains("eval_result");
  }
  EXPECT_GT(progress, 0);
  EXPECT_EQ(evals, 2);
  const nlohmann::json& summary = lines.back();
  EXPECT_EQ(summary["state"], "SUCCEEDED") << summary.dump();
  EXPECT_TRUE(summary.contains("best_accuracy"));
  EXPECT_EQ(summary["best_checkpoint"], out + "/best");
  EXPECT_GT(summary["seconds"].get<double>(), 0);
}

TEST(CmdTrainTest, SpecFileAndBadFlags) {
  const std::string out = MakeTempDir("out");
  auto bad = RunCommand({BinaryPath("ftworker"), "train", "--model", "tiny", "--precision",
                         "fp8", "--dataset", "/x", "--output-dir", out},
                        absl::Minutes(1));
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  auto missing = RunCommand({BinaryPath("ftworker"), "train", "--model", "tiny", "--dataset",
                             "/nonexistent/ftune", "--output-dir", out, "--json"},
                            absl::Minutes(1));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 1);
  std::vector<nlohmann::json> lines = JsonLines(missing->out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["state"], "FAILED");
  EXPECT_TRUE(lines.back().contains("error"));
}

TEST(CmdBenchTest, PrintsSamplesPerSec) {
  auto run = RunCommand({BinaryPath("ftworker"), "bench", "--model", "tiny", "--batch-size", "2",
                         "--seconds", "0.5", "--steps", "2", "--warmup", "1", "--threads", "1",
                         "--precision", "fp32", "--json"},
                        absl::Minutes(2));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  std::vector<nlohmann::json> lines = JsonLines(run->out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_GT(lines[0]["samples_per_sec"].get<double>(), 0);
}

TEST(CmdBenchTest, InferenceReportsMillisecondsPerBatch) {
  const std::vector<std::string> base = {BinaryPath("ftworker"), "bench", "--inference",
                                         "--model", "tiny", "--batch-size", "2", "--seconds",
                                         "0.5", "--steps", "3", "--warmup", "1", "--threads",
                                         "1", "--json", "--precision"};
  for (const std::string precision : {"fp32", "bf16"}) {
    std::vector<std::string> args = base;
    args.push_back(precision);
    auto run = RunCommand(args, absl::Minutes(2));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 0) << run->out;
    std::vector<nlohmann::json> lines = JsonLines(run->out);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["precision"], precision);
    EXPECT_EQ(lines[0]["batch_size"], 2);
    EXPECT_GT(lines[0]["ms_median"].get<double>(), 0);
    EXPECT_GE(lines[0]["ms_p90"].get<double>(), lines[0]["ms_median"].get<double>());
  }
  std::vector<std::string> cuda_only = base;
  cuda_only.push_back("fp16");
  auto refused = RunCommand(cuda_only, absl::Minutes(2));
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->exit_code, 2);  // a bad flag: fp16 needs a CUDA device
}

TEST(CmdBenchTest, ReusedFeaturesNeedAFrozenEncoder) {
  const std::vector<std::string> base = {BinaryPath("ftworker"), "bench", "--model", "tiny",
                                         "--batch-size", "2", "--seconds", "0.5", "--steps",
                                         "2", "--threads", "1", "--reuse-features", "--json"};
  std::vector<std::string> frozen = base;
  frozen.insert(frozen.end(), {"--freeze-feature-encoder", "true"});
  auto ok = RunCommand(frozen, absl::Minutes(2));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->exit_code, 0) << ok->out;
  std::vector<std::string> trainable = base;
  trainable.insert(trainable.end(), {"--freeze-feature-encoder", "false"});
  auto refused = RunCommand(trainable, absl::Minutes(2));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 1);
}

}  // namespace
}  // namespace ftune::train
