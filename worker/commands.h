// ftworker subcommands. Each Add*Command registers its flags on `app` and returns the exit
// code holder its callback fills in; main.cc runs whichever the user chose.
#pragma once

#include "CLI/CLI.hpp"

namespace ftune::worker {

// `ftworker run`: the daemon that pulls jobs from a controller.
void AddRunCommand(CLI::App& app, int* exit_code);

}  // namespace ftune::worker
