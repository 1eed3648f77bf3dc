// `ftworker run`: the worker daemon.
#include <string>

#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/shutdown.h"
#include "spdlog/spdlog.h"
#include "worker/commands.h"

namespace ftune::worker {

namespace {

struct RunFlags {
  std::string controller = "127.0.0.1:7070";
  std::string listen;
  LogConfig log{.level = "info", .file = "", .name = "ftworker"};
};

int Run(const RunFlags& flags) {
  if (absl::Status s = SetUpLogging(flags.log); !s.ok()) {
    spdlog::error("{}", s.message());
    return 2;
  }
  InstallShutdownHandlers();
  std::unique_ptr<GrpcServer> health;
  if (!flags.listen.empty()) {
    GrpcServerOptions options;
    options.listen = flags.listen;
    auto server = GrpcServer::Start(options, {});
    if (!server.ok()) {
      spdlog::error("{}", server.status().message());
      return 1;
    }
    health = std::move(server).value();
    AnnounceListening(*health);
  }
  spdlog::info("ftworker for controller {}", flags.controller);
  WaitForShutdown();
  if (health) health->Shutdown(absl::Seconds(5));
  return 0;
}

}  // namespace

void AddRunCommand(CLI::App& app, int* exit_code);
FTWORKER_COMMAND("run", AddRunCommand);

void AddRunCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "Run the worker daemon: pull jobs from a controller");
  cmd->add_option("--controller", flags->controller, "Controller address host:port")
      ->capture_default_str();
  cmd->add_option("--listen", flags->listen,
                  "Serve grpc.health.v1.Health on host:port (port 0 = any free port)");
  cmd->add_option("--log-level", flags->log.level, "trace|debug|info|warn|error")
      ->capture_default_str();
  cmd->add_option("--log-file", flags->log.file, "Also log to this file");
  cmd->callback([flags, exit_code] { *exit_code = Run(*flags); });
}

}  // namespace ftune::worker
