// The job flags shared by `ftctl submit` and `ftworker train`: one flag per JobSpec field
// (--dataset, --model, --epochs, ...) plus `-f,--spec FILE` (YAML or protobuf JSON, proto field
// names). The file is read first, flags given on the command line override it, then the spec is
// checked with ValidateJobSpec. No libtorch, no gRPC.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"

namespace ftune {

class JobSpecFlags {
 public:
  JobSpecFlags() = default;
  JobSpecFlags(const JobSpecFlags&) = delete;
  JobSpecFlags& operator=(const JobSpecFlags&) = delete;

  // Adds -f/--spec and the job flags to `cmd`. The object must outlive parsing and Build().
  void AddTo(CLI::App* cmd);

  // After parsing: the spec file (if any) with every given flag applied, validated.
  // InvalidArgument naming the flag, file or field that is wrong; NotFound for a missing file.
  absl::StatusOr<ftune::v1::JobSpec> Build() const;

  const std::string& spec_file() const { return spec_file_; }

 private:
  using Setter = std::function<absl::Status(ftune::v1::JobSpec*)>;
  template <typename T, typename Set>
  CLI::Option* Add(CLI::App* cmd, const std::string& name, const std::string& help, Set set);

  std::string spec_file_;
  // Flags in the order they were added; each applied only when given.
  std::vector<std::pair<CLI::Option*, Setter>> setters_;
};

// Reads a JobSpec file: .yaml/.yml as YAML, anything else as protobuf JSON. Unknown fields are
// errors; every error names the file (and the field when the parser says which).
absl::StatusOr<ftune::v1::JobSpec> ReadJobSpecFile(const std::string& path);

// A JobSpec from protobuf JSON text (proto or lowerCamel field names; enums by full name).
absl::StatusOr<ftune::v1::JobSpec> ParseJobSpecJson(const std::string& json);
// A JobSpec from a YAML document with the same field names as the JSON form.
absl::StatusOr<ftune::v1::JobSpec> ParseJobSpecYaml(const std::string& yaml);

// Enum names as typed on the command line: lower case, prefix dropped, '-' between words, e.g.
// "ravdess", "crema-d", "bf16" ('_' is accepted for '-').
absl::StatusOr<ftune::v1::DatasetLayout> ParseLayout(const std::string& name);
absl::StatusOr<ftune::v1::SplitStrategy> ParseSplit(const std::string& name);
absl::StatusOr<ftune::v1::Precision> ParsePrecision(const std::string& name);
absl::StatusOr<ftune::v1::LrSchedule> ParseSchedule(const std::string& name);
absl::StatusOr<ftune::v1::JobState> ParseJobState(const std::string& name);
absl::StatusOr<ftune::v1::ReportTo> ParseReportTo(const std::string& name);

// "FROM=TO" entries as a label map; InvalidArgument naming a malformed entry or a label mapped
// to two different names.
absl::StatusOr<std::map<std::string, std::string>> ParseLabelMap(
    const std::vector<std::string>& entries);

// The first path becomes dataset.path, the rest extra_datasets (each keeping its other fields
// when the spec already had one at that place; extra_datasets beyond the paths are dropped).
void SetDatasetPaths(const std::vector<std::string>& paths, ftune::v1::JobSpec* spec);

// Per-dataset flag values (--layout, --split, --eval-fraction) into a DatasetSpec; Invalid-
// Argument naming the flag when the value is not one it takes.
absl::Status SetDatasetLayout(const std::string& value, ftune::v1::DatasetSpec* dataset);
absl::Status SetDatasetSplit(const std::string& value, ftune::v1::DatasetSpec* dataset);
absl::Status SetDatasetEvalFraction(const std::string& value, ftune::v1::DatasetSpec* dataset);

// A per-dataset flag's values: one value is set on every dataset (dataset and extra_datasets),
// one per dataset is set on each in order; any other count is InvalidArgument naming `flag`.
absl::Status ApplyPerDataset(
    const std::string& flag, const std::vector<std::string>& values, ftune::v1::JobSpec* spec,
    const std::function<absl::Status(const std::string&, ftune::v1::DatasetSpec*)>& set);
// "running" for JOB_STATE_RUNNING.
std::string JobStateName(ftune::v1::JobState state);

}  // namespace ftune
