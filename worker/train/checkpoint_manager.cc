#include "worker/train/checkpoint_manager.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;

constexpr char kCheckpointPrefix[] = "checkpoint-";

// A filesystem failure while writing: a full disk may have room on the next attempt, and
// anything else (EIO, a vanished mount) is the machine's, not the job's.
absl::Status FsError(const std::string& what, const std::string& path, int error) {
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::UnavailableError(message);
}
absl::Status FsError(const std::string& what, const std::string& path, const std::error_code& ec) {
  return FsError(what, path, ec.value());
}

absl::Status Fsync(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return FsError("cannot open", path.string(), errno);
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) return FsError("cannot sync", path.string(), error);
  return absl::OkStatus();
}

// Every file and folder under `root`, and `root`.
absl::Status FsyncTree(const fs::path& root) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    RETURN_IF_ERROR(Fsync(it->path(), it->is_directory()));
  }
  if (ec) return FsError("cannot list", root.string(), ec);
  return Fsync(root, true);
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

// Scratch names put the job between dots, which job names here cannot contain, so one job's
// prefix never matches another's.
std::string SafeJob(const std::string& job) {
  std::string out;
  for (char c : job) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       (c >= '0' && c <= '9') || c == '-' || c == '_';
    out.push_back(plain ? c : '_');
  }
  return out.empty() ? "local" : out;
}

}  // namespace

CheckpointManager::CheckpointManager(std::string output_dir, CheckpointManagerOptions options)
    : output_dir_(std::move(output_dir)), options_(std::move(options)) {
  options_.keep_last = std::max(1, options_.keep_last);
  options_.job = SafeJob(options_.job);
}

absl::StatusOr<std::unique_ptr<CheckpointManager>> CheckpointManager::Create(
    const std::string& output_dir, CheckpointManagerOptions options) {
  if (output_dir.empty()) return absl::InvalidArgumentError("output_dir is empty");
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create output_dir ", output_dir, ": ", ec.message()));
  }
  std::unique_ptr<CheckpointManager> manager(
      new CheckpointManager(output_dir, std::move(options)));
  RETURN_IF_ERROR(manager->Recover());
  return manager;
}

std::string CheckpointManager::Scratch(absl::string_view kind, absl::string_view what) const {
  return (fs::path(output_dir_) /
          absl::StrCat(".", kind, ".", options_.job, ".", options_.attempt, ".", what))
      .string();
}

absl::Status CheckpointManager::MayWrite() const {
  return options_.may_write ? options_.may_write() : absl::OkStatus();
}

void CheckpointManager::CrashPoint(absl::string_view step) const {
  if (options_.crash_point) options_.crash_point(step);
}

absl::Status CheckpointManager::Recover() {
  const std::string tmp = absl::StrCat(".tmp.", options_.job, ".");
  const std::string old = absl::StrCat(".old.", options_.job, ".");
  std::error_code ec;
  bool changed = false;
  for (const fs::directory_entry& entry : fs::directory_iterator(output_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, old) && name.find('.', old.size()) != std::string::npos) {
      // A replaced folder whose replacement never arrived is still the newest of its name.
      const fs::path target = fs::path(output_dir_) / name.substr(name.find('.', old.size()) + 1);
      std::error_code check;
      if (!fs::exists(target, check) && IsComplete(entry.path().string())) {
        fs::rename(entry.path(), target, check);
        if (check) return FsError("cannot restore", target.string(), check);
      } else {
        fs::remove_all(entry.path(), check);
      }
      changed = true;
    } else if (absl::StartsWith(name, tmp)) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
      changed = true;
    }
  }
  if (ec) return FsError("cannot list", output_dir_, ec);
  return changed ? Fsync(output_dir_, true) : absl::OkStatus();
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

absl::Status CheckpointManager::Publish(const std::string& from, const std::string& to) {
  // rename(2) cannot replace a non-empty folder, so a folder of the same name first moves
  // aside to a name Recover() puts back if the process dies before the new one is in place.
  std::error_code ec;
  const std::string name = fs::path(to).filename().string();
  const std::string aside = Scratch("old", name);
  const bool replacing = fs::exists(to, ec);
  if (replacing) {
    fs::remove_all(aside, ec);
    fs::rename(to, aside, ec);
    if (ec) return FsError("cannot move aside", to, ec);
    RETURN_IF_ERROR(Fsync(output_dir_, true));
    CrashPoint(absl::StrCat(name, ": old moved aside"));
  }
  fs::rename(from, to, ec);
  if (ec) return FsError("cannot rename into place", to, ec);
  RETURN_IF_ERROR(Fsync(output_dir_, true));
  CrashPoint(absl::StrCat(name, ": published"));
  if (replacing) fs::remove_all(aside, ec);
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckpointManager::Save(int64_t step, const WriteFn& write) {
  RETURN_IF_ERROR(MayWrite());
  const std::string name = absl::StrCat(kCheckpointPrefix, step);
  const std::string temp = Scratch("tmp", name);
  const std::string final_dir = (fs::path(output_dir_) / name).string();
  std::error_code ec;
  fs::remove_all(temp, ec);
  fs::create_directories(temp, ec);
  if (ec) return FsError("cannot create", temp, ec);
  absl::Status written = write(temp);
  if (written.ok() && !IsComplete(temp)) {
    written = absl::InternalError(absl::StrCat(
        "checkpoint writer left an incomplete folder (needs config.json, model.safetensors, ",
        kTrainingStateDir, "/", kTrainerStateFile, ")"));
  }
  if (written.ok()) written = FsyncTree(temp);
  if (!written.ok()) {
    fs::remove_all(temp, ec);
    return written;
  }
  CrashPoint(absl::StrCat(name, ": written"));
  RETURN_IF_ERROR(MayWrite());
  RETURN_IF_ERROR(Publish(temp, final_dir));
  RETURN_IF_ERROR(Prune());
  return final_dir;
}

absl::StatusOr<std::string> CheckpointManager::MarkBest(const std::string& checkpoint_dir) {
  RETURN_IF_ERROR(MayWrite());
  const std::string temp = Scratch("tmp", kBestDir);
  std::error_code ec;
  fs::remove_all(temp, ec);
  absl::Status copied = LinkOrCopyTree(checkpoint_dir, temp);
  if (copied.ok()) copied = FsyncTree(temp);
  if (!copied.ok()) {
    fs::remove_all(temp, ec);
    return copied;
  }
  CrashPoint("best: written");
  RETURN_IF_ERROR(MayWrite());
  RETURN_IF_ERROR(Publish(temp, best_dir()));
  return best_dir();
}

absl::Status CheckpointManager::Prune() {
  auto all = ListComplete(output_dir_);
  const int excess = static_cast<int>(all.size()) - options_.keep_last;
  for (int i = 0; i < excess; ++i) {
    RETURN_IF_ERROR(MayWrite());
    std::error_code ec;
    // Rename first so a crash mid-delete leaves a scratch folder, not a broken checkpoint.
    const std::string doomed = Scratch("tmp", absl::StrCat("prune-", all[i].first));
    fs::rename(all[i].second, doomed, ec);
    if (ec) return FsError("cannot remove old checkpoint", all[i].second, ec);
    RETURN_IF_ERROR(Fsync(output_dir_, true));
    CrashPoint(absl::StrCat("prune ", all[i].first, ": moved away"));
    fs::remove_all(doomed, ec);
  }
  return absl::OkStatus();
}

}  // namespace ftune::train
