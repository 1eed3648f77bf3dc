// ftcontroller: the job queue, event log and fan-out.
#include <string>

#include "CLI/CLI.hpp"
#include "common/logging.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "server/controller.h"
#include "spdlog/spdlog.h"

namespace {

struct Flags {
  ftune::server::ControllerConfig controller;
  double lease_seconds = 30;
  double heartbeat_seconds = 10;
  double drain_seconds = 10;
  double retry_backoff_seconds = 5;
  double event_retention_days = 0;
  ftune::LogConfig log{.level = "info", .file = "", .name = "ftcontroller"};
};

int Run(Flags flags) {
  if (absl::Status s = ftune::SetUpLogging(flags.log); !s.ok()) {
    spdlog::error("{}", s.message());
    return 2;
  }
  if (!(flags.lease_seconds > 0) || !(flags.heartbeat_seconds > 0) ||
      flags.heartbeat_seconds >= flags.lease_seconds) {
    spdlog::error("--heartbeat-seconds must be > 0 and below --lease-seconds");
    return 2;
  }
  flags.controller.manager.lease = absl::Seconds(flags.lease_seconds);
  flags.controller.manager.heartbeat = absl::Seconds(flags.heartbeat_seconds);
  if (!(flags.retry_backoff_seconds >= 0)) {
    spdlog::error("--retry-backoff-seconds must be >= 0");
    return 2;
  }
  flags.controller.manager.retry_backoff = absl::Seconds(flags.retry_backoff_seconds);
  if (!(flags.event_retention_days >= 0)) {
    spdlog::error("--event-retention-days must be >= 0 (0 keeps every event)");
    return 2;
  }
  if (flags.event_retention_days > 0) {
    flags.controller.manager.event_retention = absl::Hours(24 * flags.event_retention_days);
  }
  ftune::InstallShutdownHandlers();
  auto controller = ftune::server::Controller::Start(flags.controller);
  if (!controller.ok()) {
    spdlog::error("{}", controller.status().message());
    return 1;
  }
  ftune::AnnounceListening((*controller)->server());
  if (ftune::HttpServer* http = (*controller)->http_server(); http != nullptr) {
    ftune::AnnounceHttpListening(*http);
  }
  spdlog::info("ftcontroller {} serving on {}{}{}, data in {}", ftune::kVersion,
               (*controller)->address(), flags.controller.tls.enabled() ? " (TLS)" : "",
               flags.controller.tokens_file.empty() ? "" : " (tokens)",
               flags.controller.data_dir);
  const int signo = ftune::WaitForShutdown();
  spdlog::info("signal {}: draining", signo);
  (*controller)->Shutdown(absl::Seconds(flags.drain_seconds));
  controller->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ftcontroller: queues fine-tuning jobs and streams their events"};
  app.set_version_flag("--version", std::string("ftcontroller ") + ftune::kVersion);
  Flags flags;
  ftune::server::ControllerConfig& c = flags.controller;
  app.add_option("--listen", c.listen, "host:port to serve on (port 0 = any free port)")
      ->capture_default_str();
  app.add_option("--http-listen", c.http_listen,
                 "host:port for HTTP: GET /metrics (Prometheus), with the same TLS and tokens "
                 "(port 0 = any free port)");
  app.add_option("--data-dir", c.data_dir, "Folder for the SQLite database")
      ->capture_default_str();
  app.add_option("--lease-seconds", flags.lease_seconds,
                 "A job whose worker sends no heartbeat for this long is requeued")
      ->capture_default_str();
  app.add_option("--heartbeat-seconds", flags.heartbeat_seconds,
                 "How often workers are told to heartbeat")
      ->capture_default_str();
  app.add_option("--retry-backoff-seconds", flags.retry_backoff_seconds,
                 "Wait before a failed attempt is retried, doubling with each one (at most 5 "
                 "minutes)")
      ->capture_default_str();
  app.add_option("--event-retention-days", flags.event_retention_days,
                 "Drop the progress and log events of jobs that ended this many days ago "
                 "(state changes, evaluations and checkpoints stay); 0 keeps every event")
      ->capture_default_str();
  app.add_option("--tls-cert", c.tls.cert_file, "PEM certificate chain: serve TLS");
  app.add_option("--tls-key", c.tls.key_file, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", c.tls.ca_file,
                 "PEM CA bundle: require client certificates signed by it (mTLS)");
  app.add_option("--tokens", c.tokens_file,
                 "Bearer tokens file, one `scope token` per line (scope client|worker|admin)");
  app.add_flag("--allow-insecure", c.allow_insecure,
               "Serve a non-loopback address without --tokens or mTLS: anyone who reaches it "
               "may submit jobs and act as a worker");
  app.add_option("--max-message-bytes", c.max_message_bytes, "Largest request or response")
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
