// `ftworker train` and `ftworker bench` as a user runs them.
#include <signal.h>

#include <filesystem>
#include <fstream>
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

// A tone dataset and the `ftworker train` command line that trains it as 2 local CPU ranks.
struct TwoRankRun {
  std::string data, out;
  std::vector<std::string> args;
};

TwoRankRun TwoCpuRanks(int train_per_class, int eval_per_class, int epochs) {
  TwoRankRun run{MakeTempDir("data"), MakeTempDir("out"), {}};
  testing::ToneSetOptions tones;
  tones.train_per_class = train_per_class;
  tones.eval_per_class = eval_per_class;
  testing::MakeToneDataset(run.data, tones);
  run.args = {BinaryPath("ftworker"), "train", "--dataset", run.data, "--layout", "folders",
              "--model", "tiny", "--epochs", std::to_string(epochs), "--batch-size", "2",
              "--learning-rate", "1e-3", "--precision", "fp32", "--threads", "1",
              "--output-dir", run.out, "--json", "--world-size", "2", "--devices", "cpu,cpu"};
  return run;
}

// The pid of the process started by `parent` whose command line holds `arg`, arg_next.
std::optional<pid_t> ChildWithArgs(pid_t parent, const std::string& arg,
                                   const std::string& arg_next) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string pid, comm, state;
    pid_t ppid = 0;
    if (!(stat >> pid >> comm >> state >> ppid) || ppid != parent) continue;
    std::ifstream cmdline(entry.path() / "cmdline", std::ios::binary);
    std::vector<std::string> args;
    for (std::string a; std::getline(cmdline, a, '\0');) args.push_back(a);
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == arg && args[i + 1] == arg_next) return static_cast<pid_t>(std::stoi(name));
    }
  }
  return std::nullopt;
}

// --world-size 2 on one machine: two rank processes, one stream of events (rank 0's) and one
// summary on stdout.
TEST(CmdTrainTest, WorldSizeTwoRunsLocalRanksAsOneStream) {
  const TwoRankRun two = TwoCpuRanks(6, 2, 2);
  auto run = RunCommand(two.args, absl::Minutes(3));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  std::vector<nlohmann::json> lines = JsonLines(run->out);  // any stray line fails to parse
  ASSERT_GE(lines.size(), 4u);
  int data_parallel = 0, summaries = 0, evals = 0;
  for (const auto& l : lines) {
    if (l.contains("log")) {
      data_parallel += l["log"]["message"].get<std::string>().find(
                           "data-parallel: 2 ranks over gloo") != std::string::npos;
    }
    summaries += l.contains("state") && !l.contains("job_id");
    evals += l.contains("eval_result");
  }
  EXPECT_EQ(data_parallel, 1);
  EXPECT_EQ(summaries, 1);
  EXPECT_EQ(evals, 2);
  EXPECT_EQ(lines.back()["state"], "SUCCEEDED") << lines.back().dump();

  auto mismatch = RunCommand({BinaryPath("ftworker"), "train", "--dataset", two.data, "--layout",
                              "folders", "--model", "tiny", "--world-size", "2", "--devices",
                              "cpu", "--output-dir", two.out},
                             absl::Minutes(1));
  ASSERT_TRUE(mismatch.ok());
  EXPECT_EQ(mismatch->exit_code, 2);
}

// A rank killed with -9 mid-run ends the run: the other rank's collective fails (no rank
// stays blocked) and the launcher exits with an error.
TEST(CmdTrainTest, ARankKilledMidRunEndsTheRun) {
  const TwoRankRun two = TwoCpuRanks(8, 1, 200);
  auto launcher = ftune::testing::ChildProcess::Start(two.args);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  // Training has started once progress is printed.
  bool training = false;
  while (!training) {
    absl::StatusOr<std::string> line = launcher->ReadLine(absl::Minutes(2));
    ASSERT_TRUE(line.ok()) << line.status();
    training = line->find("train_progress") != std::string::npos;
  }
  std::optional<pid_t> rank0 = ChildWithArgs(launcher->pid(), "--rank", "0");
  std::optional<pid_t> rank1 = ChildWithArgs(launcher->pid(), "--rank", "1");
  ASSERT_TRUE(rank0.has_value());
  ASSERT_TRUE(rank1.has_value());
  ASSERT_EQ(kill(*rank1, SIGKILL), 0);
  absl::StatusOr<int> code = launcher->Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_NE(*code, 0);
  EXPECT_NE(kill(*rank0, 0), 0);  // the launcher waited for rank 0 too: it is gone
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

TEST(CmdBenchTest, WorldSizeTwoReportsTheRanksTotal) {
  auto run = RunCommand({BinaryPath("ftworker"), "bench", "--model", "tiny", "--batch-size", "2",
                         "--seconds", "0.5", "--steps", "2", "--warmup", "1", "--threads", "1",
                         "--world-size", "2", "--json"},
                        absl::Minutes(2));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->out;
  std::vector<nlohmann::json> lines = JsonLines(run->out);
  ASSERT_EQ(lines.size(), 1u) << run->out;  // rank 0 reports for both
  EXPECT_EQ(lines[0]["world_size"], 2);
  // 2 ranks x 2 clips per step: samples/s counts both ranks' clips.
  EXPECT_NEAR(lines[0]["samples_per_sec"].get<double>(),
              4 * 1000.0 / lines[0]["step_ms"].get<double>(), 1e-6);
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
