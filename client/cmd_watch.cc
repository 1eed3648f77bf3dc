// `ftctl watch JOB`: live progress to the job's end; exit 0 when it succeeded, 1 when it
// failed or was cancelled.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "client/commands.h"
#include "common/job_spec_flags.h"
#include "client/watch.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;

int RunWatch(const Ctl& ctl, const std::string& job_id, int64_t after_seq, bool json) {
  auto stub = Connect(ctl.flags);
  if (!stub.ok()) return ReportError(stub.status(), ctl.flags);
  std::unique_ptr<EventPrinter> printer =
      json ? MakeJsonPrinter(std::cout) : MakeTextPrinter(std::cout, isatty(STDOUT_FILENO));
  absl::StatusOr<WatchResult> result = WatchJob(stub->get(), job_id, after_seq, printer.get());
  if (!result.ok()) return ReportError(result.status(), ctl.flags);
  if (result->state == v1::JOB_STATE_SUCCEEDED) {
    if (!json) std::cerr << "job " << job_id << " succeeded\n";
    return kExitOk;
  }
  std::cerr << "job " << job_id << " " << JobStateName(result->state)
            << (result->reason.empty() ? "" : ": ") << result->reason << "\n";
  return kExitJobFailed;
}

void AddWatchCommand(CLI::App& app, Ctl* ctl) {
  struct WatchFlags {
    std::string job_id;
    int64_t after_seq = 0;
    bool json = false;
  };
  auto flags = std::make_shared<WatchFlags>();
  CLI::App* cmd = app.add_subcommand("watch", "Follow a job's events live until it ends");
  cmd->fallthrough();
  cmd->add_option("job", flags->job_id, "Job id")->required();
  cmd->add_option("--after-seq", flags->after_seq, "Start after this event seq (0 = all)")
      ->check(CLI::NonNegativeNumber);
  AddJsonFlag(cmd, &flags->json);
  cmd->callback([ctl, flags] {
    ctl->exit_code = RunWatch(*ctl, flags->job_id, flags->after_seq, flags->json);
  });
}

}  // namespace ftune::ctl
