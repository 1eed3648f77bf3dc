// ftserve: answers Classify requests from HuBERT classification checkpoints.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/credentials.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "server/serve/inference_engine.h"
#include "server/serve/inference_service.h"
#include "server/serve/oip_grpc_service.h"
#include "server/serve/rest_api.h"
#include "server/serve/serve_metrics.h"
#include "spdlog/spdlog.h"

namespace {

struct Flags {
  std::string listen = "127.0.0.1:7080";
  // REST (Open Inference Protocol, :classify) and /metrics; empty = none.
  std::string http_listen;
  int http_threads = 64;
  std::vector<std::string> models;
  ftune::serve::EngineOptions engine;
  double max_delay_ms = 5;
  ftune::serve::ServiceLimits limits;
  ftune::TlsOptions tls;
  std::string tokens_file;
  bool allow_insecure = false;
  double drain_seconds = 5;
  ftune::LogConfig log{.level = "info", .file = "", .name = "ftserve"};
};

// "ID=DIR" or "DIR". The default id is the folder's name, with its parent's for the folders
// ftune writes (best/, checkpoint-N/), so runs/job-7/best is served as "job-7/best".
ftune::serve::ModelSource ParseModelFlag(const std::string& flag) {
  const size_t eq = flag.find('=');
  if (eq != std::string::npos && eq > 0) return {flag.substr(0, eq), flag.substr(eq + 1)};
  std::filesystem::path path = std::filesystem::path(flag).lexically_normal();
  if (path.has_filename() == false) path = path.parent_path();
  std::string id = path.filename().string();
  if ((id == "best" || id.rfind("checkpoint-", 0) == 0) && path.has_parent_path()) {
    id = path.parent_path().filename().string() + "/" + id;
  }
  return {id, flag};
}

int Run(Flags flags) {
  if (absl::Status s = ftune::SetUpLogging(flags.log); !s.ok()) {
    spdlog::error("{}", s.message());
    return 2;
  }
  // SIGHUP reloads every model; it is taken by a dedicated thread, so block it everywhere.
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  ftune::InstallShutdownHandlers();
  for (const auto& [flag, listen] : {std::pair<std::string, std::string>{"--listen", flags.listen},
                                     {"--http-listen", flags.http_listen}}) {
    if (listen.empty()) continue;
    if (absl::Status s = ftune::CheckExposure(flag, listen, !flags.tokens_file.empty(), flags.tls,
                                              flags.allow_insecure);
        !s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
  }

  std::vector<ftune::serve::ModelSource> sources;
  for (const std::string& flag : flags.models) sources.push_back(ParseModelFlag(flag));
  flags.engine.max_delay = absl::Microseconds(static_cast<int64_t>(flags.max_delay_ms * 1000));
  ftune::MetricsRegistry registry;
  ftune::serve::ServeMetrics metrics(&registry);
  flags.engine.on_batch = [&metrics](const ftune::serve::BatchReport& batch) {
    metrics.RecordBatch(batch);
  };
  auto engine = ftune::serve::InferenceEngine::Create(flags.engine, sources);
  if (!engine.ok()) {
    spdlog::error("{}", engine.status().message());
    return 1;
  }
  metrics.WatchEngine(engine->get());

  std::shared_ptr<const ftune::TokenStore> tokens;
  if (!flags.tokens_file.empty()) {
    auto loaded = ftune::TokenStore::Load(flags.tokens_file);
    if (!loaded.ok()) {
      spdlog::error("{}", loaded.status().message());
      return 2;
    }
    tokens = std::move(*loaded);
  }
  auto credentials = ftune::MakeServerCredentials(flags.tls);
  if (!credentials.ok()) {
    spdlog::error("{}", credentials.status().message());
    return 2;
  }
  auto authorizer = std::make_shared<const ftune::Authorizer>(tokens);
  ftune::serve::InferenceServiceImpl service(engine->get(), flags.limits, authorizer, &metrics);
  ftune::serve::OipGrpcService oip_service(engine->get(), flags.limits, authorizer, &metrics);
  ftune::GrpcServerOptions options;
  options.listen = flags.listen;
  options.credentials = *credentials;
  options.max_message_bytes =
      static_cast<int>(std::min<int64_t>(flags.limits.max_request_bytes + (1 << 20), INT32_MAX));
  auto server = ftune::GrpcServer::Start(options, {&service, &oip_service});
  if (!server.ok()) {
    spdlog::error("{}", server.status().message());
    return 1;
  }
  ftune::serve::RestApi rest(engine->get(), {.limits = flags.limits}, &metrics);
  std::unique_ptr<ftune::HttpServer> http;
  if (!flags.http_listen.empty()) {
    ftune::HttpServerOptions http_options;
    http_options.listen = flags.http_listen;
    http_options.tls = flags.tls;
    http_options.tokens = tokens;
    http_options.max_body_bytes = flags.limits.max_request_bytes;
    http_options.threads = flags.http_threads;
    std::vector<ftune::HttpRoute> routes = rest.Routes();
    routes.push_back(ftune::MetricsRoute([&registry] { return registry.Render(); }));
    auto started = ftune::HttpServer::Start(http_options, std::move(routes));
    if (!started.ok()) {
      spdlog::error("{}", started.status().message());
      return 1;
    }
    http = std::move(started).value();
  }
  for (const auto& status : (*engine)->ListModels()) {
    spdlog::info("model '{}' from {}: {} labels, loaded in {}", status.current->id,
                 status.current->path, status.current->loaded.config.num_labels(),
                 absl::FormatDuration(status.current->load_duration));
  }
  ftune::AnnounceListening(**server);
  if (http) ftune::AnnounceHttpListening(*http);

  std::atomic<bool> stopping{false};
  std::thread reloader([&] {
    for (;;) {
      int signo = 0;
      sigwait(&hup, &signo);
      if (stopping.load()) return;
      for (const auto& status : (*engine)->ListModels()) {
        auto reloaded = (*engine)->Reload(status.current->id);
        if (reloaded.ok()) {
          spdlog::info("model '{}' reloaded as version {}", status.current->id,
                       (*reloaded)->version);
        } else {
          spdlog::error("model '{}' kept serving version {}: reload failed: {}",
                        status.current->id, status.current->version, reloaded.status().message());
        }
      }
    }
  });

  const int signo = ftune::WaitForShutdown();
  spdlog::info("signal {}: draining", signo);
  // Both servers drain at once; then the engine answers whatever is still queued, which
  // releases HTTP handlers waiting for it.
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(flags.drain_seconds);
  if (http) http->Drain(absl::ZeroDuration());
  (*server)->Shutdown(absl::Seconds(flags.drain_seconds));
  if (http) http->Drain(drain_deadline - absl::Now());
  (*engine)->Shutdown();
  if (http) http->Stop();
  stopping.store(true);
  pthread_kill(reloader.native_handle(), SIGHUP);
  reloader.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ftserve: serves HuBERT audio classifiers over gRPC and REST (SIGHUP reloads the models)"};
  app.set_version_flag("--version", std::string("ftserve ") + ftune::kVersion);
  Flags flags;
  app.add_option("--listen", flags.listen, "host:port to serve on (port 0 = any free port)")
      ->capture_default_str();
  app.add_option("--http-listen", flags.http_listen,
                 "host:port for REST (Open Inference Protocol v2, /v1/models/ID:classify) and "
                 "/metrics, with the same TLS and tokens (port 0 = any free port)");
  app.add_option("--http-threads", flags.http_threads,
                 "HTTP connections served at once (each blocks a thread while it waits)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--model", flags.models,
                 "[ID=]DIR: a Hugging Face HuBERT classification folder (repeatable)")
      ->required();
  app.add_option("--device", flags.engine.device, "auto, cpu, cuda or cuda:N")
      ->capture_default_str();
  app.add_option("--precision", flags.engine.precision, "auto, fp32, bf16 or fp16")
      ->capture_default_str();
  app.add_option("--threads", flags.engine.threads, "Intra-op threads (0 = all cores)")
      ->capture_default_str();
  app.add_option("--max-batch", flags.engine.max_batch, "Most clips per forward pass")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--max-delay-ms", flags.max_delay_ms,
                 "How long a clip waits for others to batch with")
      ->capture_default_str()->check(CLI::Range(0.0, 10000.0));
  app.add_option("--queue-limit", flags.engine.queue_limit,
                 "Waiting clips per model beyond which requests get RESOURCE_EXHAUSTED")
      ->capture_default_str()->check(CLI::Range(1, 1000000));
  app.add_option("--max-audio-seconds", flags.limits.max_audio_seconds, "Longest clip accepted")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-request-bytes", flags.limits.max_request_bytes,
                 "Largest audio payload accepted")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--tls-cert", flags.tls.cert_file, "PEM certificate chain: serve TLS");
  app.add_option("--tls-key", flags.tls.key_file, "PEM private key for --tls-cert");
  app.add_option("--tls-client-ca", flags.tls.ca_file, "PEM CA: require client certificates");
  app.add_option("--tokens", flags.tokens_file,
                 "Bearer tokens file (`scope token` per line); required on every call when set");
  app.add_flag("--allow-insecure", flags.allow_insecure,
               "Serve a non-loopback address without --tokens or mTLS: anyone who reaches it "
               "may classify");
  app.add_option("--drain-seconds", flags.drain_seconds,
                 "Time calls in flight get to finish on shutdown")
      ->capture_default_str();
  app.add_option("--log-level", flags.log.level, "trace|debug|info|warn|error")
      ->capture_default_str();
  app.add_option("--log-file", flags.log.file, "Also log to this file");
  CLI11_PARSE(app, argc, argv);
  return Run(std::move(flags));
}
