// How ftctl prints jobs and workers: protobuf JSON for scripts, aligned text for people.
#pragma once

#include <google/protobuf/message.h>

#include <ostream>
#include <string>
#include <vector>

#include "ftune/v1/job.pb.h"
#include "common/job_format.h"  // ToJson, FormatSeconds, FormatTime
#include "ftune/v1/job_service.pb.h"

namespace ftune::ctl {

// The job's fields, one per line; a data-parallel job's ranks and the workers they run on.
void PrintJob(std::ostream& out, const ftune::v1::Job& job);
// One row per job: id, state, name, attempt, ranks, progress, accuracy, created.
void PrintJobTable(std::ostream& out, const std::vector<ftune::v1::Job>& jobs);
void PrintWorkers(std::ostream& out, const ftune::v1::ListWorkersResponse& workers);

}  // namespace ftune::ctl
