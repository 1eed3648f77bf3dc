// ftcontroller: the job queue, event log and fan-out.
#include <filesystem>
#include <string>

#include "CLI/CLI.hpp"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "spdlog/spdlog.h"

namespace {

struct Flags {
  std::string listen = "127.0.0.1:7070";
  std::string data_dir = "ftune-data";
  double drain_seconds = 10;
  ftune::LogConfig log{.level = "info", .file = "", .name = "ftcontroller"};
};

int Run(const Flags& flags) {
  if (absl::Status s = ftune::SetUpLogging(flags.log); !s.ok()) {
    spdlog::error("{}", s.message());
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(flags.data_dir, ec);
  if (ec) {
    spdlog::error("cannot create --data-dir {}: {}", flags.data_dir, ec.message());
    return 1;
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
  spdlog::info("ftcontroller {} serving on {}, data in {}", ftune::kVersion,
               (*server)->address(), flags.data_dir);
  const int signo = ftune::WaitForShutdown();
  spdlog::info("signal {}: draining", signo);
  (*server)->Shutdown(absl::Seconds(flags.drain_seconds));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ftcontroller: queues fine-tuning jobs and streams their events"};
  app.set_version_flag("--version", std::string("ftcontroller ") + ftune::kVersion);
  Flags flags;
  app.add_option("--listen", flags.listen, "host:port to serve on (port 0 = any free port)")
      ->capture_default_str();
  app.add_option("--data-dir", flags.data_dir, "Folder for the SQLite database")
      ->capture_default_str();
  app.add_option("--drain-seconds", flags.drain_seconds,
                 "Time calls in flight get to finish on shutdown")
      ->capture_default_str();
  app.add_option("--log-level", flags.log.level, "trace|debug|info|warn|error")
      ->capture_default_str();
  app.add_option("--log-file", flags.log.file, "Also log to this file");
  CLI11_PARSE(app, argc, argv);
  return Run(flags);
}
