#include "worker/train/checkpoint_manager.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/match.h"
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
  auto mgr = CheckpointManager::Create(out, {.keep_last = 2});
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
  auto mgr = CheckpointManager::Create(out, {.keep_last = 2});
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
    auto mgr = CheckpointManager::Create(out, {.keep_last = 3});
    ASSERT_TRUE(mgr.ok());
    ASSERT_TRUE((*mgr)->Save(4, Complete("4")).ok());
  }
  // What a crash can leave: a temp folder with a higher step, a checkpoint folder without
  // its trainer state, and a non-numeric name.
  ASSERT_TRUE(Complete("9")((fs::path(out) / ".tmp.local.0.checkpoint-9").string()).ok());
  WriteFile(fs::path(out) / "checkpoint-8" / "config.json", "{}");
  WriteFile(fs::path(out) / "checkpoint-8" / "model.safetensors", "8");
  ASSERT_TRUE(Complete("x")((fs::path(out) / "checkpoint-x").string()).ok());
  auto latest = CheckpointManager::FindLatestComplete(out);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, (fs::path(out) / "checkpoint-4").string());
  // Start-up clears the temp folder.
  auto mgr = CheckpointManager::Create(out, {.keep_last = 3});
  ASSERT_TRUE(mgr.ok());
  EXPECT_FALSE(fs::exists(fs::path(out) / ".tmp.local.0.checkpoint-9"));
  EXPECT_FALSE(CheckpointManager::FindLatestComplete(ftune::testing::MakeTempDir("empty")));
}

TEST(CheckpointManagerTest, BestSurvivesPruningAndIsReplaced) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  auto mgr = CheckpointManager::Create(out, {.keep_last = 1});
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
  auto mgr = CheckpointManager::Create(out, {.keep_last = 2});
  ASSERT_TRUE(mgr.ok());
  ASSERT_TRUE((*mgr)->Save(3, Complete("a")).ok());
  ASSERT_TRUE((*mgr)->Save(3, Complete("b")).ok());
  EXPECT_EQ(ReadFile(fs::path(out) / "checkpoint-3" / "model.safetensors"), "b");
}

TEST(CheckpointManagerTest, StartUpClearsOnlyItsJobsScratch) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  ASSERT_TRUE(Complete("a")((fs::path(out) / ".tmp.job-a.1.checkpoint-3").string()).ok());
  ASSERT_TRUE(Complete("b")((fs::path(out) / ".tmp.job-b.0.checkpoint-4").string()).ok());
  ASSERT_TRUE(Complete("b")((fs::path(out) / ".old.job-b.0.best").string()).ok());
  auto mgr = CheckpointManager::Create(out, {.keep_last = 2, .job = "job-a", .attempt = 2});
  ASSERT_TRUE(mgr.ok()) << mgr.status();
  EXPECT_FALSE(fs::exists(fs::path(out) / ".tmp.job-a.1.checkpoint-3"));  // an earlier attempt
  // Another job's save in flight, and its best/ being replaced, are its own business.
  EXPECT_TRUE(fs::exists(fs::path(out) / ".tmp.job-b.0.checkpoint-4"));
  EXPECT_TRUE(fs::exists(fs::path(out) / ".old.job-b.0.best"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "best"));
}

// A worker whose lease may have passed to another worker writes nothing: no scratch folder,
// no publish, no prune, no best/ update.
TEST(CheckpointManagerTest, RefusedWritesChangeNothing) {
  const std::string out = ftune::testing::MakeTempDir("ckpt");
  bool allowed = true;
  CheckpointManagerOptions options{.keep_last = 1};
  options.may_write = [&]() -> absl::Status {
    return allowed ? absl::OkStatus() : absl::AbortedError("lease lost");
  };
  auto mgr = CheckpointManager::Create(out, options);
  ASSERT_TRUE(mgr.ok());
  auto first = (*mgr)->Save(1, Complete("one"));
  ASSERT_TRUE(first.ok());
  allowed = false;
  EXPECT_TRUE(absl::IsAborted((*mgr)->Save(2, Complete("two")).status()));
  EXPECT_TRUE(absl::IsAborted((*mgr)->Save(1, Complete("again")).status()));
  EXPECT_TRUE(absl::IsAborted((*mgr)->MarkBest(*first).status()));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"checkpoint-1"});
  EXPECT_EQ(ReadFile(fs::path(out) / "checkpoint-1" / "model.safetensors"), "one");

  // Refused between writing and publishing: the scratch folder is left for the next start of
  // this job to clear, and the published checkpoint stays.
  int calls = 0;
  allowed = true;
  options.may_write = [&]() -> absl::Status {
    return ++calls == 1 ? absl::OkStatus() : absl::AbortedError("lease lost");
  };
  auto fenced = CheckpointManager::Create(out, options);
  ASSERT_TRUE(fenced.ok());
  EXPECT_TRUE(absl::IsAborted((*fenced)->Save(2, Complete("two")).status()));
  EXPECT_FALSE(fs::exists(fs::path(out) / "checkpoint-2"));
  EXPECT_EQ(ReadFile(fs::path(out) / "checkpoint-1" / "model.safetensors"), "one");
}

// Saves, replacements, prunes and best/ updates with keep_last 1 — the case where a badly
// ordered save loses the only checkpoint.
void SaveSequence(CheckpointManager& mgr) {
  auto check = [](const absl::StatusOr<std::string>& r) {
    if (!r.ok()) std::abort();
    return *r;
  };
  const std::string one = check(mgr.Save(1, Complete("one")));
  check(mgr.MarkBest(one));
  check(mgr.Save(2, Complete("two")));              // prunes checkpoint-1
  const std::string two = check(mgr.Save(2, Complete("two again")));  // same step: replaced
  check(mgr.MarkBest(two));
  check(mgr.Save(3, Complete("three")));            // prunes checkpoint-2
}

// The process dies at each step of the sequence in turn (a forked child calls _exit there);
// after the next start of the same job, the newest checkpoint published before the crash (or
// a newer one) is complete and holds what was written for its step, best/ likewise, and no
// scratch folder is left.
TEST(CheckpointManagerTest, ACrashAtAnyStepKeepsTheNewestCompleteCheckpoint) {
  std::vector<std::string> points;
  {
    const std::string out = ftune::testing::MakeTempDir("ckpt");
    auto mgr = CheckpointManager::Create(
        out, {.keep_last = 1,
              .crash_point = [&](absl::string_view step) { points.emplace_back(step); }});
    ASSERT_TRUE(mgr.ok());
    SaveSequence(**mgr);
  }
  ASSERT_GE(points.size(), 15u);
  const std::map<int64_t, std::vector<std::string>> contents = {
      {1, {"one"}}, {2, {"two", "two again"}}, {3, {"three"}}};
  int64_t newest = 0;  // newest step published by the time of the crash
  bool best_published = false;
  for (size_t crash = 0; crash < points.size(); ++crash) {
    SCOPED_TRACE("crash at " + points[crash]);
    // A crash point follows the step it names: that step is done.
    const std::string& point = points[crash];
    if (absl::EndsWith(point, ": published")) {
      if (absl::StartsWith(point, "best")) {
        best_published = true;
      } else {
        newest = std::stoll(point.substr(sizeof("checkpoint-") - 1));
      }
    }
    const std::string out = ftune::testing::MakeTempDir("ckpt");
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      size_t seen = 0;
      auto mgr = CheckpointManager::Create(
          out, {.keep_last = 1, .job = "job-1", .crash_point = [&](absl::string_view) {
                  if (seen++ == crash) _exit(0);
                }});
      if (!mgr.ok()) _exit(2);
      SaveSequence(**mgr);
      _exit(3);  // never reached: the crash point came first
    }
    int wstatus = 0;
    ASSERT_EQ(waitpid(child, &wstatus, 0), child);
    ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;

    auto restarted =
        CheckpointManager::Create(out, {.keep_last = 1, .job = "job-1", .attempt = 1});
    ASSERT_TRUE(restarted.ok()) << restarted.status();
    auto all = CheckpointManager::ListComplete(out);
    if (newest > 0) {
      ASSERT_FALSE(all.empty());
      EXPECT_GE(all.back().first, newest);
      const auto& allowed = contents.at(all.back().first);
      const std::string tag = ReadFile(fs::path(all.back().second) / "model.safetensors");
      EXPECT_NE(std::find(allowed.begin(), allowed.end(), tag), allowed.end()) << tag;
    }
    if (best_published) EXPECT_TRUE(CheckpointManager::IsComplete((fs::path(out) / "best").string()));
    for (const auto& e : fs::directory_iterator(out)) {
      EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
    }
  }
}

}  // namespace
}  // namespace ftune::train
