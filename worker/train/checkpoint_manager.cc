#include "worker/train/checkpoint_manager.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;

constexpr char kCheckpointPrefix[] = "checkpoint-";
constexpr char kTempPrefix[] = ".tmp-";

absl::Status FsError(const std::string& what, const std::string& path, const std::error_code& ec) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", ec.message()));
}

// Copies a tree, hard-linking files (checkpoint files are never modified after the rename).
absl::Status LinkOrCopyTree(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to, ec);
  if (ec) return FsError("cannot create", to.string(), ec);
  for (const fs::directory_entry& entry : fs::directory_iterator(from, ec)) {
    const fs::path target = to / entry.path().filename();
    if (entry.is_directory()) {
      RETURN_IF_ERROR(LinkOrCopyTree(entry.path(), target));
      continue;
    }
    fs::create_hard_link(entry.path(), target, ec);
    if (ec) {
      ec.clear();
      fs::copy_file(entry.path(), target, fs::copy_options::overwrite_existing, ec);
      if (ec) return FsError("cannot copy", entry.path().string(), ec);
    }
  }
  if (ec) return FsError("cannot list", from.string(), ec);
  return absl::OkStatus();
}

std::string TempName(const std::string& what) {
  return absl::StrCat(kTempPrefix, what, "-", ::getpid());
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointManager>> CheckpointManager::Create(
    const std::string& output_dir, int keep_last) {
  if (output_dir.empty()) return absl::InvalidArgumentError("output_dir is empty");
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create output_dir ", output_dir, ": ", ec.message()));
  }
  // A crash between the two renames of MarkBest leaves best/ as .old-best: put it back.
  const fs::path best = fs::path(output_dir) / kBestDir;
  const fs::path old_best = fs::path(output_dir) / ".old-best";
  if (!fs::exists(best) && fs::exists(old_best)) fs::rename(old_best, best, ec);
  for (const fs::directory_entry& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, kTempPrefix) || name == ".old-best") {
      std::error_code remove_ec;
      fs::remove_all(entry.path(), remove_ec);
    }
  }
  return std::unique_ptr<CheckpointManager>(
      new CheckpointManager(output_dir, std::max(1, keep_last)));
}

std::string CheckpointManager::best_dir() const {
  return (fs::path(output_dir_) / kBestDir).string();
}

bool CheckpointManager::IsComplete(const std::string& dir) {
  std::error_code ec;
  const fs::path p(dir);
  return fs::is_regular_file(p / "config.json", ec) &&
         fs::is_regular_file(p / "model.safetensors", ec) &&
         fs::is_regular_file(p / kTrainingStateDir / kTrainerStateFile, ec);
}

std::vector<std::pair<int64_t, std::string>> CheckpointManager::ListComplete(
    const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, kCheckpointPrefix)) continue;
    int64_t step = 0;
    if (!absl::SimpleAtoi(name.substr(sizeof(kCheckpointPrefix) - 1), &step) || step < 0) {
      continue;
    }
    if (!entry.is_directory() || !IsComplete(entry.path().string())) continue;
    found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::optional<std::string> CheckpointManager::FindLatestComplete(const std::string& output_dir) {
  auto all = ListComplete(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

absl::StatusOr<std::string> CheckpointManager::Save(int64_t step, const WriteFn& write) {
  const fs::path temp = fs::path(output_dir_) / TempName(absl::StrCat("checkpoint-", step));
  const fs::path final_dir = fs::path(output_dir_) / absl::StrCat(kCheckpointPrefix, step);
  std::error_code ec;
  fs::remove_all(temp, ec);
  fs::create_directories(temp, ec);
  if (ec) return FsError("cannot create", temp.string(), ec);
  if (absl::Status s = write(temp.string()); !s.ok()) {
    fs::remove_all(temp, ec);
    return s;
  }
  if (!IsComplete(temp.string())) {
    fs::remove_all(temp, ec);
    return absl::InternalError(absl::StrCat(
        "checkpoint writer left an incomplete folder (needs config.json, model.safetensors, ",
        kTrainingStateDir, "/", kTrainerStateFile, ")"));
  }
  if (fs::exists(final_dir)) {
    // Same step saved again (e.g. a hand-back right after a scheduled save): replace it.
    const fs::path stale = fs::path(output_dir_) / TempName(absl::StrCat("stale-", step));
    fs::rename(final_dir, stale, ec);
    if (ec) return FsError("cannot move aside", final_dir.string(), ec);
    fs::remove_all(stale, ec);
  }
  fs::rename(temp, final_dir, ec);
  if (ec) return FsError("cannot rename checkpoint to", final_dir.string(), ec);
  RETURN_IF_ERROR(Prune());
  return final_dir.string();
}

absl::StatusOr<std::string> CheckpointManager::MarkBest(const std::string& checkpoint_dir) {
  const fs::path temp = fs::path(output_dir_) / TempName("best");
  const fs::path best = best_dir();
  const fs::path old_best = fs::path(output_dir_) / ".old-best";
  std::error_code ec;
  fs::remove_all(temp, ec);
  if (absl::Status s = LinkOrCopyTree(checkpoint_dir, temp); !s.ok()) {
    fs::remove_all(temp, ec);
    return s;
  }
  fs::remove_all(old_best, ec);
  if (fs::exists(best)) {
    fs::rename(best, old_best, ec);
    if (ec) return FsError("cannot move aside", best.string(), ec);
  }
  fs::rename(temp, best, ec);
  if (ec) return FsError("cannot rename best checkpoint to", best.string(), ec);
  fs::remove_all(old_best, ec);
  return best.string();
}

absl::Status CheckpointManager::Prune() {
  auto all = ListComplete(output_dir_);
  const int excess = static_cast<int>(all.size()) - keep_last_;
  for (int i = 0; i < excess; ++i) {
    std::error_code ec;
    // Rename first so a crash mid-delete leaves a temp folder, not a broken checkpoint.
    const fs::path doomed = fs::path(output_dir_) / TempName(absl::StrCat("prune-", all[i].first));
    fs::rename(all[i].second, doomed, ec);
    if (ec) return FsError("cannot remove old checkpoint", all[i].second, ec);
    fs::remove_all(doomed, ec);
  }
  return absl::OkStatus();
}

}  // namespace ftune::train
