#include "tests/train/tfevents_reader.h"

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace ftune::train::testing {

nlohmann::json ReadTensorBoardRun(const std::string& run_dir) {
  auto run = ftune::testing::RunCommand(
      {"/usr/bin/python3", ftune::testing::SourcePath("tests/train/read_tfevents.py"), run_dir},
      absl::Seconds(60));
  EXPECT_TRUE(run.ok()) << run.status();
  if (!run.ok()) return nullptr;
  EXPECT_EQ(run->exit_code, 0) << run->out;
  return run->exit_code == 0 ? nlohmann::json::parse(run->out) : nlohmann::json(nullptr);
}

std::vector<int64_t> TagSteps(const nlohmann::json& run, const std::string& tag) {
  std::vector<int64_t> steps;
  if (!run.is_object() || !run["scalars"].contains(tag)) return steps;
  for (const auto& point : run["scalars"][tag]) steps.push_back(point[0].get<int64_t>());
  return steps;
}

}  // namespace ftune::train::testing
