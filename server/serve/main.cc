// ftserve: answers Classify requests from HuBERT classification checkpoints.
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "spdlog/spdlog.h"

namespace {

struct Flags {
  std::string listen = "127.0.0.1:7080";
  std::vector<std::string> models;
  double drain_seconds = 5;
  ftune::LogConfig log{.level = "info", .file = "", .name = "ftserve"};
};

int Run(const Flags& flags) {
  if (absl::Status s = ftune::SetUpLogging(flags.log); !s.ok()) {
    spdlog::error("{}", s.message());
    return 2;
  }
  ftune::InstallShutdownHandlers();
  ftune::GrpcServerOptions options;
  options.listen = flags.listen;
  auto server = ftune::GrpcServer::Start(options, {});
  if (!server.ok()) {
    spdlog::error("{}", server.status().message());
    return 1;
  }
  ftune::AnnounceListening(**server);
  ftune::WaitForShutdown();
  (*server)->Shutdown(absl::Seconds(flags.drain_seconds));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ftserve: serves HuBERT audio classifiers over gRPC"};
  app.set_version_flag("--version", std::string("ftserve ") + ftune::kVersion);
  Flags flags;
  app.add_option("--listen", flags.listen, "host:port to serve on (port 0 = any free port)")
      ->capture_default_str();
  app.add_option("--model", flags.models, "Hugging Face checkpoint folder (repeatable)");
  app.add_option("--drain-seconds", flags.drain_seconds,
                 "Time calls in flight get to finish on shutdown")
      ->capture_default_str();
  app.add_option("--log-level", flags.log.level, "trace|debug|info|warn|error")
      ->capture_default_str();
  app.add_option("--log-file", flags.log.file, "Also log to this file");
  CLI11_PARSE(app, argc, argv);
  return Run(flags);
}
