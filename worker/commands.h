// ftworker subcommands. Each cmd_*.cc file registers one subcommand group with
// FTWORKER_COMMAND; main.cc adds them all to the command line, in name order.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace ftune::worker {

// Adds the subcommand to `app`; its callback stores the process exit code in *exit_code.
using AddCommandFn = void (*)(CLI::App& app, int* exit_code);

struct CommandRegistration {
  CommandRegistration(const char* name, AddCommandFn add);
};

// Registered subcommands as (name, add function), sorted by name.
std::vector<std::pair<std::string, AddCommandFn>> RegisteredCommands();

}  // namespace ftune::worker

#define FTWORKER_COMMAND(name, add_fn) \
  static const ::ftune::worker::CommandRegistration ftworker_command_registration_(name, add_fn)
