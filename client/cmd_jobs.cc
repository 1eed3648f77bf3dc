// `ftctl get`, `ftctl list`, `ftctl cancel`.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "client/commands.h"
#include "client/output.h"
#include "common/job_spec_flags.h"
#include "common/grpc_status.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;

namespace {

struct JobFlags {
  std::string job_id;
  bool json = false;
  // list
  std::vector<std::string> states;
  uint32_t limit = 50;
  std::string page_token;
  bool all = false;
  // cancel
  std::string reason;
};

int Get(Ctl* ctl, const JobFlags& flags) {
  auto stub = Connect(ctl->flags);
  if (!stub.ok()) return ReportError(stub.status(), ctl->flags);
  grpc::ClientContext context;
  SetDeadline(&context, ctl->flags);
  v1::GetJobRequest request;
  request.set_job_id(flags.job_id);
  v1::Job job;
  absl::Status status = FromGrpcStatus((*stub)->GetJob(&context, request, &job));
  if (!status.ok()) return ReportError(status, ctl->flags);
  if (flags.json) {
    std::cout << ToJson(job) << "\n";
  } else {
    PrintJob(std::cout, job);
  }
  return kExitOk;
}

int List(Ctl* ctl, const JobFlags& flags) {
  v1::ListJobsRequest request;
  for (const std::string& list : flags.states) {
    for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
      absl::StatusOr<v1::JobState> state = ParseJobState(std::string(name));
      if (!state.ok()) {
        std::cerr << "ftctl list: " << state.status().message() << "\n";
        return kExitUsage;
      }
      request.add_states(*state);
    }
  }
  request.set_page_size(flags.limit);
  request.set_page_token(flags.page_token);
  auto stub = Connect(ctl->flags);
  if (!stub.ok()) return ReportError(stub.status(), ctl->flags);

  v1::ListJobsResponse all;
  for (;;) {
    grpc::ClientContext context;
    SetDeadline(&context, ctl->flags);
    v1::ListJobsResponse page;
    absl::Status status = FromGrpcStatus((*stub)->ListJobs(&context, request, &page));
    if (!status.ok()) return ReportError(status, ctl->flags);
    all.mutable_jobs()->MergeFrom(page.jobs());
    all.set_next_page_token(page.next_page_token());
    if (!flags.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (flags.json) {
    std::cout << ToJson(all) << "\n";
    return kExitOk;
  }
  PrintJobTable(std::cout, {all.jobs().begin(), all.jobs().end()});
  if (!all.next_page_token().empty()) {
    std::cerr << "more: ftctl list --page-token " << all.next_page_token() << " (or --all)\n";
  }
  return kExitOk;
}

int Cancel(Ctl* ctl, const JobFlags& flags) {
  auto stub = Connect(ctl->flags);
  if (!stub.ok()) return ReportError(stub.status(), ctl->flags);
  grpc::ClientContext context;
  SetDeadline(&context, ctl->flags);
  v1::CancelJobRequest request;
  request.set_job_id(flags.job_id);
  request.set_reason(flags.reason);
  v1::Job job;
  absl::Status status = FromGrpcStatus((*stub)->CancelJob(&context, request, &job));
  if (!status.ok()) return ReportError(status, ctl->flags);
  if (flags.json) {
    std::cout << ToJson(job) << "\n";
  } else {
    std::cout << job.id() << " " << JobStateName(job.state()) << "\n";
  }
  return kExitOk;
}

}  // namespace

void AddJobCommands(CLI::App& app, Ctl* ctl) {
  {
    auto flags = std::make_shared<JobFlags>();
    CLI::App* cmd = app.add_subcommand("get", "Show one job");
    cmd->fallthrough();
    cmd->add_option("job", flags->job_id, "Job id")->required();
    AddJsonFlag(cmd, &flags->json);
    cmd->callback([ctl, flags] { ctl->exit_code = Get(ctl, *flags); });
  }
  {
    auto flags = std::make_shared<JobFlags>();
    CLI::App* cmd = app.add_subcommand("list", "List jobs, newest first");
    cmd->fallthrough();
    cmd->add_option("--state", flags->states,
                    "Only jobs in these states (queued, assigned, running, cancelling, "
                    "succeeded, failed, cancelled); repeat or comma-separate");
    cmd->add_option("--limit,--page-size", flags->limit, "Jobs per page (at most 1000)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    cmd->add_option("--page-token", flags->page_token, "Continue from an earlier page");
    cmd->add_flag("--all", flags->all, "Fetch every page");
    AddJsonFlag(cmd, &flags->json);
    cmd->callback([ctl, flags] { ctl->exit_code = List(ctl, *flags); });
  }
  {
    auto flags = std::make_shared<JobFlags>();
    CLI::App* cmd = app.add_subcommand("cancel", "Cancel a job");
    cmd->fallthrough();
    cmd->add_option("job", flags->job_id, "Job id")->required();
    cmd->add_option("--reason", flags->reason, "Recorded with the cancellation");
    AddJsonFlag(cmd, &flags->json);
    cmd->callback([ctl, flags] { ctl->exit_code = Cancel(ctl, *flags); });
  }
}

}  // namespace ftune::ctl
