// ftworker: runs fine-tuning jobs, as a daemon for a controller or one job in the foreground.
#include <string>

#include "CLI/CLI.hpp"
#include "common/version.h"
#include "worker/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"ftworker: fine-tunes HuBERT audio classifiers, for an ftcontroller or locally"};
  app.set_version_flag("--version", std::string("ftworker ") + ftune::kVersion);
  app.require_subcommand(1);
  int exit_code = 0;
  ftune::worker::AddRunCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
