// ftcontroller assembled: SQLite store under the data dir, job manager, gRPC services with
// TLS and tokens, the sweeper thread that expires leases, and (with http_listen) an HTTP
// server for /metrics, the REST job API and the dashboard. main() and the tests build it the same way.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/credentials.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "server/controller_metrics.h"
#include "server/dashboard.h"
#include "server/job_manager.h"
#include "server/services.h"
#include "server/sqlite_job_store.h"

namespace ftune::server {

struct ControllerConfig {
  std::string listen = "127.0.0.1:7070";
  // Holds ftcontroller.db (and its WAL files) and the lock that keeps a second controller out.
  std::string data_dir = "ftune-data";
  JobManagerOptions manager;
  TlsOptions tls;
  // Tokens file (see common/auth.h); empty = no authorization, then only on loopback or with
  // mTLS unless allow_insecure (CheckExposure).
  std::string tokens_file;
  bool allow_insecure = false;
  int max_message_bytes = 64 << 20;
  // host:port of the HTTP server (GET /metrics, the REST job API of server/job_api.h and the
  // dashboard of server/dashboard.h; same TLS and tokens); empty = none.
  std::string http_listen;
  // Event streams (SSE) served at once. Each holds an HTTP thread for its life, so the server
  // has this many threads plus kHttpRequestThreads kept for everything else; more streams get
  // 503 with Retry-After.
  int http_max_streams = 32;
  // How often the sweeper looks for expired leases and long polls.
  absl::Duration sweep_interval = absl::Milliseconds(200);
};

class Controller {
 public:
  static absl::StatusOr<std::unique_ptr<Controller>> Start(const ControllerConfig& config);
  ~Controller();

  const std::string& address() const { return server_->address(); }
  GrpcServer& server() { return *server_; }
  JobManager& manager() { return *manager_; }
  // Null without http_listen.
  HttpServer* http_server() { return http_.get(); }
  MetricsRegistry& metrics() { return metrics_; }

  // Ends long polls and watch streams, drains the server for up to `drain`, stops the sweeper.
  void Shutdown(absl::Duration drain);

 private:
  Controller() = default;
  void SweepLoop();

  ControllerConfig config_;
  int lock_fd_ = -1;
  MetricsRegistry metrics_;
  std::unique_ptr<SqliteJobStore> store_;
  std::unique_ptr<TimedJobStore> timed_store_;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<Dashboard> dashboard_;
  std::unique_ptr<HttpServer> http_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread sweeper_;
};

}  // namespace ftune::server
