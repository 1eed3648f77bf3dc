// ftctl: the command line for ftune. Global flags go before or after the subcommand.
#include <string>

#include "CLI/CLI.hpp"
#include "client/commands.h"
#include "common/version.h"

int main(int argc, char** argv) {
  using namespace ftune::ctl;
  CLI::App app{"ftctl: submit, watch, report and classify with ftune"};
  app.set_version_flag("--version", std::string("ftctl ") + ftune::kVersion);
  app.require_subcommand(1);
  Ctl ctl;
  AddGlobalFlags(&app, &ctl.flags);
  AddSubmitCommand(app, &ctl);
  AddJobCommands(app, &ctl);
  AddWatchCommand(app, &ctl);
  AddWorkersCommand(app, &ctl);
  AddClassifyCommand(app, &ctl);
  AddReportCommand(app, &ctl);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every real parse error is a usage error.
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  return ctl.exit_code;
}
