// `ftctl submit`: builds a JobSpec from -f spec.yaml/json and the job flags, checks it, submits
// it; prints the job id (or the Job as JSON); --watch follows it to the end.
#include <iostream>
#include <memory>

#include "client/commands.h"
#include "client/output.h"
#include "common/grpc_status.h"
#include "common/job_spec.h"
#include "common/job_spec_flags.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;

namespace {

struct SubmitFlags {
  JobSpecFlags spec;
  bool watch = false;
  bool json = false;
};

int Submit(Ctl* ctl, const SubmitFlags& flags) {
  absl::StatusOr<v1::JobSpec> spec = flags.spec.Build();
  if (!spec.ok()) {
    std::cerr << "ftctl submit: " << spec.status().message() << "\n";
    return kExitUsage;
  }
  auto stub = Connect(ctl->flags);
  if (!stub.ok()) return ReportError(stub.status(), ctl->flags);
  grpc::ClientContext context;
  SetDeadline(&context, ctl->flags);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  v1::SubmitJobResponse response;
  absl::Status status = FromGrpcStatus((*stub)->SubmitJob(&context, request, &response));
  if (!status.ok()) return ReportError(status, ctl->flags);
  const v1::Job& job = response.job();
  if (flags.json) {
    std::cout << ToJson(job) << "\n" << std::flush;
  } else {
    std::cout << job.id() << "\n" << std::flush;
    std::cerr << (response.created() ? "submitted job " : "already submitted as job ") << job.id()
              << " (" << JobStateName(job.state()) << ")";
    if (!flags.watch) std::cerr << "; follow it with: ftctl watch " << job.id();
    std::cerr << "\n" << DescribeRecipe(*spec) << "\n";
  }
  if (!flags.watch) return kExitOk;
  return RunWatch(*ctl, job.id(), 0, flags.json);
}

}  // namespace

void AddSubmitCommand(CLI::App& app, Ctl* ctl) {
  auto flags = std::make_shared<SubmitFlags>();
  CLI::App* cmd = app.add_subcommand("submit", "Submit a fine-tuning job");
  cmd->fallthrough();
  flags->spec.AddTo(cmd);
  cmd->add_flag("--watch", flags->watch, "Follow the job to its end (exit code as for watch)");
  AddJsonFlag(cmd, &flags->json);
  cmd->callback([ctl, flags] { ctl->exit_code = Submit(ctl, *flags); });
}

}  // namespace ftune::ctl
