// The job flags shared by `ftworker train` and `ftctl submit`: one flag per JobSpec field
// (--dataset, --model, --epochs, --batch-size, ...) plus `--spec FILE` (a JobSpec in
// protobuf's JSON mapping). Flags given on the command line override the file. No libtorch.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"

namespace ftune::train {

class JobSpecFlags {
 public:
  JobSpecFlags() = default;
  JobSpecFlags(const JobSpecFlags&) = delete;
  JobSpecFlags& operator=(const JobSpecFlags&) = delete;

  // Adds the flags to `cmd`. The object must outlive parsing and BuildSpec().
  void Register(CLI::App* cmd);

  // After parsing: the --spec file (if any) with every flag that was given applied on top.
  // Unknown enum names and unreadable/invalid files are InvalidArgument / NotFound.
  absl::StatusOr<ftune::v1::JobSpec> BuildSpec() const;

 private:
  struct Flag;
  std::string spec_file_;
  std::vector<std::shared_ptr<Flag>> flags_;
};

// Reads a JobSpec from protobuf JSON text (proto or lowerCamel field names).
absl::StatusOr<ftune::v1::JobSpec> ParseJobSpecJson(const std::string& json);

// Enum names used by the flags: auto|ravdess|folders|manifest, auto|speaker|random|manifest,
// linear|cosine|constant, auto|fp32|fp16|bf16.
absl::StatusOr<ftune::v1::DatasetLayout> ParseLayout(const std::string& name);
absl::StatusOr<ftune::v1::SplitStrategy> ParseSplit(const std::string& name);
absl::StatusOr<ftune::v1::LrSchedule> ParseSchedule(const std::string& name);
absl::StatusOr<ftune::v1::Precision> ParsePrecision(const std::string& name);

}  // namespace ftune::train
