// `ftctl report JOB [-o FILE]`: the job's HTML report (see report.h).
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "common/report.h"
#include "common/grpc_status.h"
#include "nlohmann/json.hpp"

namespace ftune::ctl {
namespace {

struct ReportFlags {
  std::string job_id;
  std::string output;
  bool json = false;
};

// Every event of the job up to now: replays the stream and stops at the job's last seq, so
// a running job's report does not wait for the job to end.
absl::StatusOr<std::vector<ftune::v1::JobEvent>> FetchEvents(
    ftune::v1::JobService::StubInterface* stub, const ftune::v1::Job& job,
    const GlobalFlags& flags) {
  std::vector<ftune::v1::JobEvent> events;
  if (job.last_event_seq() == 0) return events;
  grpc::ClientContext context;
  SetDeadline(&context, flags);
  ftune::v1::WatchJobRequest request;
  request.set_job_id(job.id());
  auto reader = stub->WatchJob(&context, request);
  ftune::v1::JobEvent event;
  while (reader->Read(&event)) {
    events.push_back(event);
    if (event.seq() >= job.last_event_seq()) {
      context.TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
    return FromGrpcStatus(status);
  }
  return events;
}

int RunReport(const Ctl& ctl, const ReportFlags& flags) {
  auto stub = Connect(ctl.flags);
  if (!stub.ok()) return ReportError(stub.status(), ctl.flags);
  ftune::v1::Job job;
  {
    grpc::ClientContext context;
    SetDeadline(&context, ctl.flags);
    ftune::v1::GetJobRequest request;
    request.set_job_id(flags.job_id);
    grpc::Status status = (*stub)->GetJob(&context, request, &job);
    if (!status.ok()) return ReportError(FromGrpcStatus(status), ctl.flags);
  }
  auto events = FetchEvents(stub->get(), job, ctl.flags);
  if (!events.ok()) return ReportError(events.status(), ctl.flags);
  const std::string output =
      flags.output.empty() ? absl::StrCat("report-", job.id(), ".html") : flags.output;
  std::ofstream file(output, std::ios::binary | std::ios::trunc);
  file << RenderReport(job, std::move(*events));
  file.close();
  if (!file) {
    // A bad -o is the caller's to fix: a usage error, not a controller one.
    return ReportError(absl::InvalidArgumentError(absl::StrCat("cannot write ", output)),
                       ctl.flags);
  }
  if (flags.json) {
    nlohmann::ordered_json out;
    out["job_id"] = job.id();
    out["report"] = output;
    out["events"] = job.last_event_seq();
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "report for " << job.id() << " written to " << output << "\n";
  }
  return kExitOk;
}

}  // namespace

void AddReportCommand(CLI::App& app, Ctl* ctl) {
  auto flags = std::make_shared<ReportFlags>();
  CLI::App* cmd =
      app.add_subcommand("report",
                         "Write a self-contained HTML report of a job: curves, confusion matrix, "
                         "hyperparameters, dataset");
  cmd->fallthrough();
  cmd->add_option("job", flags->job_id, "Job id")->required();
  cmd->add_option("-o,--output", flags->output, "HTML file to write (default report-JOB.html)");
  AddJsonFlag(cmd, &flags->json);
  cmd->callback([ctl, flags] { ctl->exit_code = RunReport(*ctl, *flags); });
}

}  // namespace ftune::ctl
