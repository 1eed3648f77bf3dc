// spdlog set-up shared by every binary.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"

namespace ftune {

struct LogConfig {
  // trace, debug, info, warn, error, critical, off.
  std::string level = "info";
  // Also append to this file when not empty.
  std::string file;
  // Name shown in every line (the binary's name).
  std::string name = "ftune";
};

// Installs the default logger: stderr, plus the file when configured.
absl::Status SetUpLogging(const LogConfig& config);

}  // namespace ftune

// Debian's Abseil has its own string_view type: teach fmt (and so spdlog) to print it and
// absl::Status, so `spdlog::error("{}", status)` works.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Context>
  auto format(absl::string_view s, Context& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<std::string> {
  template <typename Context>
  auto format(const absl::Status& status, Context& ctx) const {
    return fmt::formatter<std::string>::format(status.ToString(), ctx);
  }
};
