// ftworker: runs fine-tuning jobs, as a daemon for a controller or one job in the foreground.
#include <algorithm>
#include <map>
#include <string>

#include "CLI/CLI.hpp"
#include "common/version.h"
#include "worker/commands.h"

namespace ftune::worker {
namespace {

std::map<std::string, AddCommandFn>& Registry() {
  static auto* registry = new std::map<std::string, AddCommandFn>();
  return *registry;
}

}  // namespace

CommandRegistration::CommandRegistration(const char* name, AddCommandFn add) {
  Registry()[name] = add;
}

std::vector<std::pair<std::string, AddCommandFn>> RegisteredCommands() {
  return {Registry().begin(), Registry().end()};
}

}  // namespace ftune::worker

int main(int argc, char** argv) {
  CLI::App app{"ftworker: fine-tunes HuBERT audio classifiers, for an ftcontroller or locally"};
  app.set_version_flag("--version", std::string("ftworker ") + ftune::kVersion);
  app.require_subcommand(1);
  int exit_code = 0;
  for (const auto& [name, add] : ftune::worker::RegisteredCommands()) add(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
