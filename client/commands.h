// ftctl subcommands, one file per group; main.cc adds them all.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "client/cli.h"

namespace ftune::ctl {

// Shared by the subcommands of one ftctl run.
struct Ctl {
  GlobalFlags flags;
  int exit_code = kExitOk;
};

void AddSubmitCommand(CLI::App& app, Ctl* ctl);   // cmd_submit.cc
void AddJobCommands(CLI::App& app, Ctl* ctl);     // cmd_jobs.cc: get, list, cancel
void AddWatchCommand(CLI::App& app, Ctl* ctl);    // cmd_watch.cc
void AddWorkersCommand(CLI::App& app, Ctl* ctl);  // cmd_workers.cc
void AddClassifyCommand(CLI::App& app, Ctl* ctl); // cmd_classify.cc: ftserve, not the controller
void AddReportCommand(CLI::App& app, Ctl* ctl);   // cmd_report.cc

// Follows `job_id` after `after_seq` to its end (shared by watch and submit --watch);
// returns the exit code.
int RunWatch(const Ctl& ctl, const std::string& job_id, int64_t after_seq, bool json);

}  // namespace ftune::ctl
