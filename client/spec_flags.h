// `ftctl submit`'s job flags, one per JobSpec field, and how they combine with a spec file:
// the file (protobuf JSON mapping of JobSpec) is read first, flags given on the command line
// override it, then the spec is checked with ValidateJobSpec.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"

namespace ftune::ctl {

class SpecFlags {
 public:
  // Adds the job flags and -f/--file to `cmd`. Must outlive the parse.
  void AddTo(CLI::App* cmd);

  // The spec from the file (if any) with the given flags applied; INVALID_ARGUMENT naming
  // the flag or field that is wrong.
  absl::StatusOr<ftune::v1::JobSpec> Build() const;

  const std::string& spec_file() const { return spec_file_; }

 private:
  using Setter = std::function<absl::Status(ftune::v1::JobSpec*)>;
  template <typename T>
  void Option(CLI::App* cmd, const std::string& name, const std::string& help,
              std::function<absl::Status(const T&, ftune::v1::JobSpec*)> set);
  void Flag(CLI::App* cmd, const std::string& name, const std::string& help,
            std::function<void(bool, ftune::v1::JobSpec*)> set);

  std::string spec_file_;
  // Flags in the order they were added; applied when given.
  std::vector<std::pair<CLI::Option*, Setter>> setters_;
};

// Reads a JobSpec from protobuf JSON text (proto or JSON field names; enums by name).
absl::StatusOr<ftune::v1::JobSpec> ParseJobSpecJson(const std::string& json);

// Enum names as typed on the command line (lower case, prefix dropped), e.g. "ravdess".
absl::StatusOr<ftune::v1::DatasetLayout> ParseLayout(const std::string& name);
absl::StatusOr<ftune::v1::SplitStrategy> ParseSplit(const std::string& name);
absl::StatusOr<ftune::v1::Precision> ParsePrecision(const std::string& name);
absl::StatusOr<ftune::v1::LrSchedule> ParseSchedule(const std::string& name);
absl::StatusOr<ftune::v1::JobState> ParseJobState(const std::string& name);
// "running" for JOB_STATE_RUNNING.
std::string JobStateName(ftune::v1::JobState state);

}  // namespace ftune::ctl
