#include "common/path_roots.h"

#include <system_error>

#include "absl/strings/str_cat.h"

namespace ftune {
namespace {

namespace fs = std::filesystem;

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

absl::StatusOr<fs::path> ResolvePath(const std::string& path) {
  std::error_code error;
  fs::path current = fs::absolute(path, error);
  if (error) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", error.message()));
  // weakly_canonical stops at a dangling link and keeps its name: follow links by hand (as the
  // kernel does, at most 40 deep) until the last one, then fold the rest.
  for (int hops = 0;; ++hops) {
    fs::path parent = fs::weakly_canonical(current.parent_path(), error);
    if (error) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", error.message()));
    current = parent / current.filename();
    if (!fs::is_symlink(fs::symlink_status(current, error))) break;
    if (hops == 40) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': too many levels of links"));
    }
    const fs::path target = fs::read_symlink(current, error);
    if (error) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", error.message()));
    current = target.is_absolute() ? target : parent / target;
  }
  return fs::weakly_canonical(current, error).lexically_normal();
}

absl::StatusOr<PathRoots> PathRoots::Create(const std::vector<std::string>& roots) {
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
  return PathRoots(std::move(canonical));
}

bool PathRoots::AllowsResolved(const fs::path& resolved) const {
  if (roots_.empty()) return true;
  for (const std::string& root : roots_) {
    if (Inside(resolved, fs::path(root))) return true;
  }
  return false;
}

bool PathRoots::Allows(const std::string& path) const {
  if (roots_.empty()) return true;
  absl::StatusOr<fs::path> resolved = ResolvePath(path);
  return resolved.ok() && AllowsResolved(*resolved);
}

}  // namespace ftune
