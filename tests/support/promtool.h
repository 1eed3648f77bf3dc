// Runs Prometheus' own linter, `promtool check metrics` (Debian's `prometheus` package,
// installed by scripts/setup), on a /metrics page.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace ftune::testing {

inline constexpr char kPromtoolPath[] = "/usr/bin/promtool";

// OK when promtool accepts `exposition` without a finding; otherwise an error carrying
// promtool's output (FailedPrecondition when promtool is not installed).
absl::Status PromtoolCheckMetrics(const std::string& exposition);

}  // namespace ftune::testing
