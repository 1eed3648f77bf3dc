#include "client/output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "common/job_spec_flags.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;

namespace {

std::string Progress(const v1::Job& job) {
  if (job.total_steps() <= 0) return "-";
  return absl::StrFormat("%d/%d", job.step(), job.total_steps());
}

std::string DeviceNames(const v1::Worker& worker) {
  std::vector<std::string> names;
  for (const v1::Device& device : worker.devices()) names.push_back(device.name());
  return absl::StrJoin(names, ",");
}

// "2 ranks" for a data-parallel job, "1" otherwise.
std::string Ranks(const v1::Job& job) {
  return job.spec().world_size() > 1 ? absl::StrCat(job.spec().world_size(), " ranks") : "1";
}

std::string WorkerStateName(v1::WorkerState state) {
  std::string name = v1::WorkerState_Name(state);
  if (absl::StartsWith(name, "WORKER_STATE_")) name = name.substr(13);
  return absl::AsciiStrToLower(name);
}

}  // namespace

void PrintJob(std::ostream& out, const v1::Job& job) {
  const v1::JobSpec& spec = job.spec();
  auto row = [&out](const char* key, const std::string& value) {
    if (!value.empty()) out << absl::StrFormat("%-16s %s\n", key, value);
  };
  row("id", job.id());
  row("name", spec.name());
  row("state", JobStateName(job.state()));
  if (!job.error().empty()) row("error", job.error());
  row("attempt", absl::StrCat(job.attempt()));
  if (job.spec().world_size() > 1) {
    row("ranks", Ranks(job));
    // The gang by rank while leased, else the last one that ran it.
    std::vector<std::string> gang;
    for (const v1::RankPlacement& placement : job.workers()) {
      gang.push_back(absl::StrCat(placement.worker_id(), " ", placement.device()));
    }
    row("workers", absl::StrJoin(gang, ", "));
  } else {
    row("worker", job.worker_id());
  }
  row("model", spec.model());
  row(spec.extra_datasets_size() > 0 ? "datasets" : "dataset",
      absl::StrJoin(DatasetPaths(spec), " + "));
  row("output_dir", spec.output_dir());
  row("device", spec.device());
  row("created", FormatTime(job.create_time()));
  if (job.has_start_time()) row("started", FormatTime(job.start_time()));
  if (job.has_end_time()) row("ended", FormatTime(job.end_time()));
  if (job.total_steps() > 0) row("step", Progress(job));
  if (!job.best_metric_name().empty()) {
    row("best", absl::StrFormat("%s %.4f", job.best_metric_name(), job.best_metric()));
  }
  if (job.last_accuracy() > 0) row("last_accuracy", absl::StrFormat("%.4f", job.last_accuracy()));
  row("best_checkpoint", job.best_checkpoint());
  row("last_checkpoint", job.last_checkpoint());
  row("last_event_seq", absl::StrCat(job.last_event_seq()));
}

void PrintJobTable(std::ostream& out, const std::vector<v1::Job>& jobs) {
  int id_width = 2;
  for (const v1::Job& job : jobs) id_width = std::max(id_width, static_cast<int>(job.id().size()));
  out << absl::StrFormat("%-*s %-11s %-20s %7s %8s %13s %8s  %s\n", id_width, "ID", "STATE",
                         "NAME", "ATTEMPT", "RANKS", "STEP", "ACC", "CREATED");
  for (const v1::Job& job : jobs) {
    std::string name = job.spec().name();
    if (name.size() > 20) name = name.substr(0, 19) + "~";
    out << absl::StrFormat(
        "%-*s %-11s %-20s %7d %8s %13s %8s  %s\n", id_width, job.id(), JobStateName(job.state()),
        name.empty() ? "-" : name, job.attempt(), Ranks(job), Progress(job),
        job.last_accuracy() > 0 ? absl::StrFormat("%.4f", job.last_accuracy()) : "-",
        FormatTime(job.create_time()));
  }
}

void PrintWorkers(std::ostream& out, const v1::ListWorkersResponse& workers) {
  out << absl::StrFormat("%-24s %-9s %-16s %-20s %-20s %s\n", "ID", "STATE", "HOST", "DEVICES",
                         "LAST HEARTBEAT", "JOBS");
  for (const v1::Worker& worker : workers.workers()) {
    std::vector<std::string> jobs(worker.job_ids().begin(), worker.job_ids().end());
    out << absl::StrFormat("%-24s %-9s %-16s %-20s %-20s %s\n", worker.id(),
                           WorkerStateName(worker.state()), worker.host(), DeviceNames(worker),
                           FormatTime(worker.last_heartbeat_time()),
                           jobs.empty() ? "-" : absl::StrJoin(jobs, ","));
  }
}

}  // namespace ftune::ctl
