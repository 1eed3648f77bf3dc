#include "worker/daemon/allowed_roots.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ftune::daemon {

namespace fs = std::filesystem;

bool ModelIsPath(const std::string& model) {
  if (model.empty()) return false;
  if (absl::StrContains(model, '/')) return true;
  std::error_code error;
  return fs::exists(model, error);
}

absl::StatusOr<AllowedRoots> AllowedRoots::Create(const std::vector<std::string>& roots) {
  absl::StatusOr<PathRoots> created = PathRoots::Create(roots);
  if (!created.ok()) return created.status();
  return AllowedRoots(*std::move(created));
}

absl::Status AllowedRoots::Check(const std::string& what, const std::string& path) const {
  if (roots_.empty()) return absl::OkStatus();
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  absl::StatusOr<fs::path> resolved = ResolvePath(path);
  if (!resolved.ok()) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, " cannot be resolved: ", resolved.status().message()));
  }
  if (roots_.AllowsResolved(*resolved)) return absl::OkStatus();
  // The resolved path is not named: it would tell where a link points.
  return absl::PermissionDeniedError(absl::StrCat(what, " '", path,
                                                  "' is outside the worker's allowed roots (",
                                                  absl::StrJoin(roots_.roots(), ", "), ")"));
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
