// Confines the paths a job names (dataset, model folder, output folder) to the folders the
// worker's operator allowed with --allowed-root. Paths are compared after resolving symlinks
// and `..`, so neither can escape a root.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/path_roots.h"
#include "ftune/v1/job.pb.h"

namespace ftune::daemon {

class AllowedRoots {
 public:
  // Each root must exist and be a folder. No roots = every path is allowed.
  static absl::StatusOr<AllowedRoots> Create(const std::vector<std::string>& roots);

  // OK when `path` (resolved) lies inside one of the roots; PERMISSION_DENIED naming `what`
  // and the path otherwise.
  absl::Status Check(const std::string& what, const std::string& path) const;

  // Checks dataset.path, every extra_datasets[i].path, output_dir, and model when the model
  // names a folder or file rather than a preset.
  absl::Status CheckJob(const ftune::v1::JobSpec& spec) const;

  const std::vector<std::string>& roots() const { return roots_.roots(); }

 private:
  explicit AllowedRoots(PathRoots roots) : roots_(std::move(roots)) {}

  PathRoots roots_;
};

// A spec's model names a path (not a preset) when it contains a '/' or exists on disk.
bool ModelIsPath(const std::string& model);

}  // namespace ftune::daemon
