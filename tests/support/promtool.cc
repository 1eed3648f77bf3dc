#include "tests/support/promtool.h"

#include <unistd.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "tests/support/process.h"

namespace ftune::testing {

absl::Status PromtoolCheckMetrics(const std::string& exposition) {
  if (access(kPromtoolPath, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kPromtoolPath, " is missing: scripts/setup installs Debian's prometheus"));
  }
  const std::string file = MakeTempDir("promtool") + "/metrics.txt";
  std::ofstream(file, std::ios::binary) << exposition;
  // promtool reads the page on stdin and reports findings on stderr.
  auto result = RunCommand(
      {"/bin/sh", "-c", absl::StrCat("exec ", kPromtoolPath, " check metrics < '", file, "' 2>&1")},
      absl::Seconds(60));
  if (!result.ok()) return result.status();
  const std::string findings(absl::StripAsciiWhitespace(result->out));
  if (result->exit_code != 0 || !findings.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("promtool check metrics (exit ", result->exit_code, "): ", findings));
  }
  return absl::OkStatus();
}

}  // namespace ftune::testing
