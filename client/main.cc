// ftctl: the command line for ftune.
#include <string>

#include "CLI/CLI.hpp"
#include "common/version.h"

int main(int argc, char** argv) {
  CLI::App app{"ftctl: submit, watch and manage ftune fine-tuning jobs; classify audio"};
  app.set_version_flag("--version", std::string("ftctl ") + ftune::kVersion);
  std::string controller = "localhost:7070";
  app.add_option("--controller", controller, "Controller address host:port")
      ->envname("FTCTL_CONTROLLER")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return 0;
}
