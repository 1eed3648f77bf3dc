#include "worker/daemon/allowed_roots.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ftune::daemon {
namespace {

namespace fs = std::filesystem;

// Absolute path with every symlink of its existing prefix followed and `.`/`..` folded.
absl::StatusOr<fs::path> Resolve(const std::string& path) {
  std::error_code error;
  fs::path absolute = fs::absolute(path, error);
  if (error) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", error.message()));
  fs::path resolved = fs::weakly_canonical(absolute, error);
  if (error) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", error.message()));
  return resolved;
}

bool Inside(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    // A trailing separator of the root shows up as an empty last element.
    if (r->empty() && std::next(r) == root.end()) return true;
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

bool ModelIsPath(const std::string& model) {
  if (model.empty()) return false;
  if (absl::StrContains(model, '/')) return true;
  std::error_code error;
  return fs::exists(model, error);
}

absl::StatusOr<AllowedRoots> AllowedRoots::Create(const std::vector<std::string>& roots) {
  std::vector<std::string> canonical;
  for (const std::string& root : roots) {
    std::error_code error;
    fs::path resolved = fs::canonical(root, error);
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrCat("allowed root '", root, "': ", error.message()));
    }
    if (!fs::is_directory(resolved, error)) {
      return absl::InvalidArgumentError(absl::StrCat("allowed root '", root, "' is not a folder"));
    }
    canonical.push_back(resolved.string());
  }
  return AllowedRoots(std::move(canonical));
}

absl::Status AllowedRoots::Check(const std::string& what, const std::string& path) const {
  if (roots_.empty()) return absl::OkStatus();
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  absl::StatusOr<fs::path> resolved = Resolve(path);
  if (!resolved.ok()) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, " cannot be resolved: ", resolved.status().message()));
  }
  for (const std::string& root : roots_) {
    if (Inside(*resolved, fs::path(root))) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat(what, " '", path, "' (resolved to '", resolved->string(),
                   "') is outside the worker's allowed roots (", absl::StrJoin(roots_, ", "), ")"));
}

absl::Status AllowedRoots::CheckJob(const ftune::v1::JobSpec& spec) const {
  if (roots_.empty()) return absl::OkStatus();
  if (absl::Status s = Check("dataset.path", spec.dataset().path()); !s.ok()) return s;
  for (int i = 0; i < spec.extra_datasets_size(); ++i) {
    absl::Status s =
        Check(absl::StrCat("extra_datasets[", i, "].path"), spec.extra_datasets(i).path());
    if (!s.ok()) return s;
  }
  if (absl::Status s = Check("output_dir", spec.output_dir()); !s.ok()) return s;
  if (ModelIsPath(spec.model())) return Check("model", spec.model());
  return absl::OkStatus();
}

}  // namespace ftune::daemon
