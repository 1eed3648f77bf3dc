#include "server/controller.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/credentials.h"
#include "common/status_macros.h"
#include "server/dashboard.h"
#include "server/job_api.h"
#include "spdlog/spdlog.h"

namespace ftune::server {
namespace {

// HTTP threads that event streams never take: pages, API calls and /metrics stay answered
// however many streams are open.
constexpr int kHttpRequestThreads = 16;

}  // namespace

absl::StatusOr<std::unique_ptr<Controller>> Controller::Start(const ControllerConfig& config) {
  const bool has_tokens = !config.tokens_file.empty();
  RETURN_IF_ERROR(
      CheckExposure("--listen", config.listen, has_tokens, config.tls, config.allow_insecure));
  if (!config.http_listen.empty()) {
    RETURN_IF_ERROR(CheckExposure("--http-listen", config.http_listen, has_tokens, config.tls,
                                  config.allow_insecure));
  }
  std::unique_ptr<Controller> c(new Controller());
  c->config_ = config;
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create --data-dir ", config.data_dir, ": ", ec.message()));
  }
  // Two controllers on one database would hand the same job out twice.
  const std::string lock_path = (std::filesystem::path(config.data_dir) / "ftcontroller.lock").string();
  c->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (c->lock_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(c->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("another ftcontroller is using --data-dir ", config.data_dir));
  }

  ASSIGN_OR_RETURN(c->store_, SqliteJobStore::Open(
                                  (std::filesystem::path(config.data_dir) / "ftcontroller.db").string()));
  c->timed_store_ = std::make_unique<TimedJobStore>(c->store_.get(), &c->metrics_);
  ASSIGN_OR_RETURN(c->manager_,
                   JobManager::Create(c->timed_store_.get(), Clock::Real(), config.manager));
  RegisterControllerMetrics(&c->metrics_, c->manager_.get());

  std::shared_ptr<const TokenStore> tokens;
  if (!config.tokens_file.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<TokenStore> loaded, TokenStore::Load(config.tokens_file));
    tokens = std::move(loaded);
  }
  c->authorizer_ = std::make_unique<Authorizer>(tokens);
  c->job_service_ = std::make_unique<JobServiceImpl>(c->manager_.get(), c->authorizer_.get());
  c->worker_service_ =
      std::make_unique<WorkerServiceImpl>(c->manager_.get(), c->authorizer_.get());

  GrpcServerOptions options;
  options.listen = config.listen;
  options.max_message_bytes = config.max_message_bytes;
  ASSIGN_OR_RETURN(options.credentials, MakeServerCredentials(config.tls));
  ASSIGN_OR_RETURN(c->server_, GrpcServer::Start(options, {c->job_service_.get(),
                                                           c->worker_service_.get()}));
  if (!config.http_listen.empty()) {
    HttpServerOptions http;
    http.listen = config.http_listen;
    http.tls = config.tls;
    http.tokens = tokens;
    DashboardOptions dashboard;
    dashboard.tokens = tokens;
    dashboard.secure_cookie = config.tls.enabled();
    c->dashboard_ = std::make_unique<Dashboard>(c->manager_.get(), dashboard);
    http.cookie_name = kSessionCookie;
    http.page_error = [raw = c->dashboard_.get()](const HttpRequest& request,
                                                  const absl::Status& status) {
      return raw->PageError(request, status);
    };
    http.max_streams = std::max(1, config.http_max_streams);
    http.threads = http.max_streams + kHttpRequestThreads;
    MetricsRegistry* metrics = &c->metrics_;
    std::vector<HttpRoute> routes = JobApiRoutes(c->manager_.get());
    routes.push_back(MetricsRoute([metrics] { return metrics->Render(); }));
    for (HttpRoute& route : c->dashboard_->Routes()) routes.push_back(std::move(route));
    ASSIGN_OR_RETURN(c->http_, HttpServer::Start(http, std::move(routes)));
  }
  c->sweeper_ = std::thread([raw = c.get()] { raw->SweepLoop(); });
  return c;
}

void Controller::SweepLoop() {
  constexpr absl::Duration kCompactEvery = absl::Minutes(1);
  absl::Time next_compaction = absl::Now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, absl::ToChronoNanoseconds(config_.sweep_interval),
                 [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    manager_->Sweep();
    if (absl::Now() >= next_compaction) {
      next_compaction = absl::Now() + kCompactEvery;
      absl::StatusOr<int64_t> dropped = manager_->CompactEvents();
      if (!dropped.ok()) {
        spdlog::warn("event retention: {}", dropped.status().ToString());
      } else if (*dropped > 0) {
        spdlog::info("event retention: dropped {} progress and log events of ended jobs",
                     *dropped);
      }
    }
    lock.lock();
  }
}

void Controller::Shutdown(absl::Duration drain) {
  if (server_ == nullptr) return;
  manager_->EndLongCalls();
  if (http_) http_->Drain(absl::ZeroDuration());
  server_->Shutdown(drain);
  if (http_) http_->Stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

Controller::~Controller() {
  Shutdown(absl::ZeroDuration());
  http_.reset();
  dashboard_.reset();
  server_.reset();
  job_service_.reset();
  worker_service_.reset();
  manager_.reset();
  store_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

}  // namespace ftune::server
