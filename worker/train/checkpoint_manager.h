// Checkpoint folders under a job's output_dir:
//   checkpoint-<step>/   a Hugging Face folder plus training_state/ (complete once renamed)
//   best/                a copy (hard links) of the best checkpoint so far
//   .tmp-*               work in progress; never read, removed on start-up
// Every folder appears by rename, so a crash never leaves a half checkpoint under a real name.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ftune::train {

inline constexpr char kTrainingStateDir[] = "training_state";
// Written last inside training_state/: its presence marks the folder complete.
inline constexpr char kTrainerStateFile[] = "trainer_state.json";
inline constexpr char kBestDir[] = "best";

class CheckpointManager {
 public:
  // Creates output_dir if needed and clears leftovers of interrupted saves. keep_last < 1 is
  // treated as 1: the newest checkpoint is always kept so the job can resume.
  static absl::StatusOr<std::unique_ptr<CheckpointManager>> Create(const std::string& output_dir,
                                                                   int keep_last);

  // Fills the folder it is given (model files and training_state/).
  using WriteFn = std::function<absl::Status(const std::string& dir)>;

  // Writes checkpoint-<step> through `write` into a temporary folder, renames it into place
  // (replacing an older checkpoint of the same step), and removes all but the newest
  // keep_last checkpoints. Returns the folder.
  absl::StatusOr<std::string> Save(int64_t step, const WriteFn& write);

  // Makes best/ a copy of `checkpoint_dir`, atomically replacing the previous best/.
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
  CheckpointManager(std::string output_dir, int keep_last)
      : output_dir_(std::move(output_dir)), keep_last_(keep_last) {}
  absl::Status Prune();

  std::string output_dir_;
  int keep_last_;
};

}  // namespace ftune::train
