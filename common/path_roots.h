// Folders a process may touch (a worker's --allowed-root), and the path resolution that decides
// whether a file lies inside them: symlinks (also dangling ones) and `..` are followed first,
// so neither can lead out of a root.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ftune {

// Absolute `path` with every symlink followed (a dangling link resolves to where it points,
// so its target's existence plays no part) and `.`/`..` folded.
absl::StatusOr<std::filesystem::path> ResolvePath(const std::string& path);

class PathRoots {
 public:
  // Each root must exist and be a folder; errors name it. No roots = every path is allowed.
  static absl::StatusOr<PathRoots> Create(const std::vector<std::string>& roots);
  PathRoots() = default;

  bool empty() const { return roots_.empty(); }
  // True when `path`, resolved, lies inside a root (or there are no roots).
  bool Allows(const std::string& path) const;
  bool AllowsResolved(const std::filesystem::path& resolved) const;
  // Canonical absolute roots.
  const std::vector<std::string>& roots() const { return roots_; }

 private:
  explicit PathRoots(std::vector<std::string> roots) : roots_(std::move(roots)) {}
  std::vector<std::string> roots_;
};

}  // namespace ftune
