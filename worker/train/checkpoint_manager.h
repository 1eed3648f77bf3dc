// Checkpoint folders under a job's output_dir:
//   checkpoint-<step>/   a Hugging Face folder plus training_state/ (complete once renamed)
//   best/                a copy (hard links) of the best checkpoint so far
//   .tmp.<job>.<attempt>.*  work in progress of an attempt of a job; never read
//   .old.<job>.<attempt>.*  a complete folder being replaced; put back if the replacement
//                           never arrived
// Durability: every file and folder is fsynced before the rename that publishes it, and the
// output folder after it. Whatever the point at which the process dies, the newest complete
// checkpoint stays readable (also with keep_last 1), and the next start of the same job puts
// back or removes what the interrupted save left. Other jobs' folders are never touched, and an
// attempt cleaning up after a failed write removes only its own scratch, never that of the
// attempt that took the job over.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ftune::train {

inline constexpr char kTrainingStateDir[] = "training_state";
// Written last inside training_state/: its presence marks the folder complete.
inline constexpr char kTrainerStateFile[] = "trainer_state.json";
inline constexpr char kBestDir[] = "best";

struct CheckpointManagerOptions {
  // Step checkpoints kept besides best/; < 1 is treated as 1 (the job must be able to resume).
  int keep_last = 2;
  // Name this run's scratch folders. A new manager clears what earlier attempts of `job`
  // left; other jobs' are left alone.
  std::string job = "local";
  uint32_t attempt = 0;
  // Asked before anything visible changes (publishing a checkpoint, pruning, replacing best/):
  // an error stops the operation and is returned. A worker whose lease may have passed to
  // another worker must not touch the folder that worker now owns.
  std::function<absl::Status()> may_write;
  // Tests only: called at each step of a save, prune or best/ update, so a test can end the
  // process there and check what a crash at that point leaves.
  std::function<void(absl::string_view step)> crash_point;
};

class CheckpointManager {
 public:
  // Creates output_dir if needed and finishes or clears what this job's interrupted saves
  // left.
  static absl::StatusOr<std::unique_ptr<CheckpointManager>> Create(
      const std::string& output_dir, CheckpointManagerOptions options);

  // Fills the folder it is given (model files and training_state/).
  using WriteFn = std::function<absl::Status(const std::string& dir)>;

  // Writes checkpoint-<step> through `write` into a temporary folder, publishes it (replacing
  // an older checkpoint of the same step), and removes all but the newest keep_last
  // checkpoints. Returns the folder.
  absl::StatusOr<std::string> Save(int64_t step, const WriteFn& write);

  // Makes best/ a copy of `checkpoint_dir`, replacing the previous best/.
  absl::StatusOr<std::string> MarkBest(const std::string& checkpoint_dir);

  const std::string& output_dir() const { return output_dir_; }
  std::string best_dir() const;

  // True when `dir` holds a finished checkpoint (model config, weights, trainer state).
  static bool IsComplete(const std::string& dir);
  // Complete checkpoint-<step> folders of `output_dir`, oldest step first.
  static std::vector<std::pair<int64_t, std::string>> ListComplete(const std::string& output_dir);
  // The newest complete checkpoint-<step> folder, if any.
  static std::optional<std::string> FindLatestComplete(const std::string& output_dir);

 private:
  CheckpointManager(std::string output_dir, CheckpointManagerOptions options);
  absl::Status Recover();
  absl::Status Prune();
  // Moves `from` to `to`, which must not exist, and syncs the output folder.
  absl::Status Publish(const std::string& from, const std::string& to);
  absl::Status MayWrite() const;
  void CrashPoint(absl::string_view step) const;
  std::string Scratch(absl::string_view kind, absl::string_view what) const;

  std::string output_dir_;
  CheckpointManagerOptions options_;
};

}  // namespace ftune::train
