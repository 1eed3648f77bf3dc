// How ftctl prints jobs and workers: protobuf JSON for scripts, aligned text for people.
#pragma once

#include <google/protobuf/message.h>

#include <ostream>
#include <string>
#include <vector>

#include "ftune/v1/job.pb.h"
#include "ftune/v1/job_service.pb.h"

namespace ftune::ctl {

// One line of protobuf JSON with the proto field names and every field, set or not.
std::string ToJson(const google::protobuf::Message& message);

// "12s", "3m05s", "1h02m"; "-" when negative.
std::string FormatSeconds(double seconds);

// "2026-11-24 00:41:27" (UTC) or "-" when unset.
std::string FormatTime(const google::protobuf::Timestamp& time);

// The job's fields, one per line.
void PrintJob(std::ostream& out, const ftune::v1::Job& job);
// One row per job: id, state, name, attempt, progress, accuracy, created.
void PrintJobTable(std::ostream& out, const std::vector<ftune::v1::Job>& jobs);
void PrintWorkers(std::ostream& out, const ftune::v1::ListWorkersResponse& workers);

}  // namespace ftune::ctl
