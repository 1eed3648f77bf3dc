#include "worker/train/checkpoint_manager.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A writer that produces a complete checkpoint tagged with `tag`.
CheckpointManager::WriteFn Complete(const std::string& tag) {
  return [tag](const std::string& dir) {
    WriteFile(fs::path(dir) / "config.json", "{}");
    WriteFile(fs::path(dir) / "model.safetensors", tag);
    WriteFile(fs::path(dir) / kTrainingStateDir / kTrainerStateFile, "{}");
    return absl::OkStatus();
  };
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(CheckpointManagerTest, KeepsLastNAndFindsNewest) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  auto mgr = CheckpointManager::Create(out, 2);
  ASSERT_TRUE(mgr.ok()) << mgr.status();
  for (int step : {10, 20, 30}) {
    auto dir = (*mgr)->Save(step, Complete(std::to_string(step)));
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_EQ(*dir, (fs::path(out) / ("checkpoint-" + std::to_string(step))).string());
  }
  EXPECT_FALSE(fs::exists(fs::path(out) / "checkpoint-10"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "checkpoint-20"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "checkpoint-30"));
  auto latest = CheckpointManager::FindLatestComplete(out);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, (fs::path(out) / "checkpoint-30").string());
}

TEST(CheckpointManagerTest, FailedWriteLeavesNothingBehind) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  auto mgr = CheckpointManager::Create(out, 2);
  ASSERT_TRUE(mgr.ok());
  ASSERT_TRUE((*mgr)->Save(5, Complete("5")).ok());
  auto failed = (*mgr)->Save(6, [](const std::string& dir) {
    WriteFile(fs::path(dir) / "config.json", "{}");
    return absl::InternalError("disk full");
  });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  // An incomplete writer is refused too.
  auto partial = (*mgr)->Save(7, [](const std::string& dir) {
    WriteFile(fs::path(dir) / "config.json", "{}");
    return absl::OkStatus();
  });
  EXPECT_FALSE(partial.ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"checkpoint-5"});
}

TEST(CheckpointManagerTest, ResumeIgnoresTempAndPartialFolders) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  {
    auto mgr = CheckpointManager::Create(out, 3);
    ASSERT_TRUE(mgr.ok());
    ASSERT_TRUE((*mgr)->Save(4, Complete("4")).ok());
  }
  // What a crash can leave: a temp folder with a higher step, a checkpoint folder without
  // its trainer state, and a non-numeric name.
  ASSERT_TRUE(Complete("9")((fs::path(out) / ".tmp-checkpoint-9-1").string()).ok());
  WriteFile(fs::path(out) / "checkpoint-8" / "config.json", "{}");
  WriteFile(fs::path(out) / "checkpoint-8" / "model.safetensors", "8");
  ASSERT_TRUE(Complete("x")((fs::path(out) / "checkpoint-x").string()).ok());
  auto latest = CheckpointManager::FindLatestComplete(out);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, (fs::path(out) / "checkpoint-4").string());
  // Start-up clears the temp folder.
  auto mgr = CheckpointManager::Create(out, 3);
  ASSERT_TRUE(mgr.ok());
  EXPECT_FALSE(fs::exists(fs::path(out) / ".tmp-checkpoint-9-1"));
  EXPECT_FALSE(CheckpointManager::FindLatestComplete(ftune::testing::MakeTempDir("empty")));
}

TEST(CheckpointManagerTest, BestSurvivesPruningAndIsReplaced) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  auto mgr = CheckpointManager::Create(out, 1);
  ASSERT_TRUE(mgr.ok());
  auto first = (*mgr)->Save(1, Complete("one"));
  ASSERT_TRUE(first.ok());
  auto best = (*mgr)->MarkBest(*first);
  ASSERT_TRUE(best.ok()) << best.status();
  ASSERT_TRUE((*mgr)->Save(2, Complete("two")).ok());
  EXPECT_FALSE(fs::exists(*first));  // pruned, keep_last 1
  EXPECT_TRUE(CheckpointManager::IsComplete(*best));
  EXPECT_EQ(ReadFile(fs::path(*best) / "model.safetensors"), "one");
  auto third = (*mgr)->Save(3, Complete("three"));
  ASSERT_TRUE(third.ok());
  ASSERT_TRUE((*mgr)->MarkBest(*third).ok());
  EXPECT_EQ(ReadFile(fs::path(out) / "best" / "model.safetensors"), "three");
  // best/ is not a checkpoint-<step> folder: resume never picks it.
  EXPECT_EQ(*CheckpointManager::FindLatestComplete(out), *third);
}

TEST(CheckpointManagerTest, SavingTheSameStepAgainReplacesIt) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  auto mgr = CheckpointManager::Create(out, 2);
  ASSERT_TRUE(mgr.ok());
  ASSERT_TRUE((*mgr)->Save(3, Complete("a")).ok());
  ASSERT_TRUE((*mgr)->Save(3, Complete("b")).ok());
  EXPECT_EQ(ReadFile(fs::path(out) / "checkpoint-3" / "model.safetensors"), "b");
}

}  // namespace
}  // namespace ftune::train
