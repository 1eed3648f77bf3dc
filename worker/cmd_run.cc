// `ftworker run`: the worker daemon. Pulls jobs from a controller and runs them with the
// fine-tuning runner, one per device, until SIGTERM/SIGINT; then hands running jobs back.
#include <torch/cuda.h>
#include <unistd.h>

#ifdef FTUNE_CUDA_MEMORY_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/credentials.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "spdlog/spdlog.h"
#include "worker/commands.h"
#include "worker/daemon/devices.h"
#include "worker/daemon/rendezvous_host.h"
#include "worker/runner_flags.h"
#include "worker/daemon/worker_client.h"
#include "worker/daemon/worker_daemon.h"
#include "worker/daemon/worker_metrics.h"
#include "worker/train/job_runner.h"

namespace ftune::worker {

namespace {

struct RunFlags {
  std::string controller = "127.0.0.1:7070";
  std::string listen;
  std::string worker_id;
  std::string devices;
  std::vector<std::string> allowed_roots;
  std::string rendezvous_host;
  uint32_t rendezvous_port = 29500;
  int threads = 0;
  CacheFlags caches;
  std::string token_file;
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // The HTTP server (GET /metrics): address, its own TLS files and tokens.
  std::string http_listen;
  TlsOptions http_tls;
  std::string http_tokens;
  bool allow_insecure = false;
  double drain_seconds = 60;
  LogConfig log{.level = "info", .file = "", .name = "ftworker"};
};

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

absl::StatusOr<ftune::v1::Device> CudaDevice(int index) {
  const int count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (index >= count) {
    return absl::NotFoundError(
        absl::StrCat("no CUDA device cuda:", index, " (this machine has ", count, ")"));
  }
  ftune::v1::Device device;
  device.set_name(absl::StrCat("cuda:", index));
  device.set_kind(ftune::v1::DEVICE_KIND_CUDA);
  device.set_description(absl::StrCat("CUDA device ", index));
  return device;
}

// cpu, plus every CUDA device torch can see.
std::string DefaultDevices() {
  std::string list = "cpu";
  if (torch::cuda::is_available()) {
    for (size_t i = 0; i < torch::cuda::device_count(); ++i) absl::StrAppend(&list, ",cuda:", i);
  }
  return list;
}

// Memory in use: the process for cpu, and with a CUDA libtorch what its caching allocator
// holds for tensors on each CUDA device of this worker.
std::map<std::string, double> DeviceMemory(const std::vector<ftune::v1::Device>& devices) {
  std::map<std::string, double> bytes = {{"cpu", daemon::ProcessResidentBytes()}};
#ifdef FTUNE_CUDA_MEMORY_STATS
  for (const ftune::v1::Device& device : devices) {
    if (device.kind() != ftune::v1::DEVICE_KIND_CUDA) continue;
    const int index = std::stoi(device.name().substr(device.name().find(':') + 1));
    try {
      // Index 0 of each stat array is the aggregate over pools.
      bytes[device.name()] = static_cast<double>(
          c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].current);
    } catch (const c10::Error&) {
      bytes[device.name()] = 0;  // no tensor was ever allocated there
    }
  }
#endif
  return bytes;
}

int Run(const RunFlags& flags) {
  if (absl::Status s = SetUpLogging(flags.log); !s.ok()) {
    spdlog::error("{}", s.message());
    return 2;
  }
  InstallShutdownHandlers();

  daemon::DaemonConfig config;
  config.drain_timeout = absl::Seconds(flags.drain_seconds);
  config.worker_id = flags.worker_id.empty() ? HostName() : flags.worker_id;
  config.host = HostName();
  config.version = kVersion;
  config.allowed_roots = flags.allowed_roots;
  absl::StatusOr<std::vector<ftune::v1::Device>> devices =
      daemon::ParseDevices(flags.devices.empty() ? DefaultDevices() : flags.devices, CudaDevice);
  if (!devices.ok()) {
    spdlog::error("--devices: {}", devices.status().message());
    return 2;
  }
  config.devices = *std::move(devices);
  config.rendezvous_host = flags.rendezvous_host.empty()
                               ? daemon::DefaultRendezvousHost(config.host)
                               : flags.rendezvous_host;
  config.rendezvous_port = flags.rendezvous_port;

  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(ClientChannelOptions(flags.controller, flags.tls, flags.tls_ca, flags.tls_cert,
                                       flags.tls_key, flags.token_file));
  if (!channel.ok()) {
    spdlog::error("{}", channel.status().message());
    return 2;
  }
  daemon::GrpcWorkerClient client(*channel, {});

  train::RunnerOptions runner_options;
  // Each device runs one job at a time: by default the cores are split between them.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  runner_options.allowed_roots = flags.allowed_roots;
  runner_options.default_threads =
      flags.threads > 0 ? flags.threads
                        : std::max(1, cores / static_cast<int>(config.devices.size()));
  flags.caches.Apply(&runner_options);
  std::unique_ptr<train::JobRunner> runner = train::MakeFineTuneRunner(runner_options);

  MetricsRegistry registry;
  daemon::WorkerMetrics metrics(&registry);
  metrics.WatchDeviceMemory([devices = config.devices] { return DeviceMemory(devices); });
  absl::StatusOr<std::unique_ptr<daemon::WorkerDaemon>> worker =
      daemon::WorkerDaemon::Create(config, &client, runner.get(), &metrics);
  if (!worker.ok()) {
    spdlog::error("{}", worker.status().message());
    return 2;
  }

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
  std::unique_ptr<HttpServer> http;
  if (!flags.http_listen.empty()) {
    if (absl::Status s =
            CheckExposure("--http-listen", flags.http_listen, !flags.http_tokens.empty(),
                          flags.http_tls, flags.allow_insecure, "--http-tokens",
                          "--http-tls-client-ca");
        !s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
    HttpServerOptions options;
    options.listen = flags.http_listen;
    options.tls = flags.http_tls;
    options.threads = 8;
    if (!flags.http_tokens.empty()) {
      auto tokens = TokenStore::Load(flags.http_tokens);
      if (!tokens.ok()) {
        spdlog::error("{}", tokens.status().message());
        return 2;
      }
      options.tokens = std::move(*tokens);
    }
    auto server =
        HttpServer::Start(options, {MetricsRoute([&registry] { return registry.Render(); })});
    if (!server.ok()) {
      spdlog::error("{}", server.status().message());
      return 1;
    }
    http = std::move(server).value();
    AnnounceHttpListening(*http);
  }

  std::string names;
  for (const auto& device : config.devices) {
    absl::StrAppend(&names, names.empty() ? "" : ",", device.name());
  }
  spdlog::info("ftworker {} ({}) for controller {}, devices {}", config.worker_id, kVersion,
               flags.controller, names);
  if (config.rendezvous_port > 0) {
    spdlog::info("data-parallel rank 0 here serves its rendezvous on {}:{}{}",
                 config.rendezvous_host, config.rendezvous_port,
                 config.devices.size() > 1 ? " + device index" : "");
  }
  (*worker)->Start();
  const int signo = WaitForShutdown();
  spdlog::info("signal {}: taking no new jobs, handing running ones back", signo);
  if (health) health->health().SetStatus("", grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  // The daemon stops waiting for the controller at the drain deadline, but a call to a hung
  // one (or a checkpoint still being written) can outlast it: shortly after, the process exits
  // anyway. Checkpoints are written atomically, and the controller requeues the jobs when their
  // leases expire.
  absl::Notification stopped;
  std::thread watchdog([&stopped, limit = absl::Seconds(flags.drain_seconds + 2)] {
    if (stopped.WaitForNotificationWithTimeout(limit)) return;
    spdlog::error("the drain deadline passed with work still open; exiting");
    spdlog::shutdown();
    std::_Exit(1);
  });
  (*worker)->Shutdown();
  stopped.Notify();
  watchdog.join();
  if (health) health->Shutdown(absl::Seconds(2));
  if (http) http->Shutdown(absl::Seconds(2));
  spdlog::info("stopped");
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
  cmd->add_option("--worker-id", flags->worker_id,
                  "Stable id of this worker (default: the host name)");
  cmd->add_option("--devices", flags->devices,
                  "Devices to run jobs on, one job each: cpu,cuda:0,... (default: cpu and "
                  "every CUDA device)");
  cmd->add_option("--allowed-root", flags->allowed_roots,
                  "Jobs may only read and write under this folder (repeatable; none = any "
                  "path)");
  cmd->add_option("--rendezvous-host", flags->rendezvous_host,
                  "Address other workers reach this one at, for the rendezvous of a "
                  "data-parallel job whose rank 0 runs here (default: the first non-loopback "
                  "IPv4 address, else the host name)");
  cmd->add_option("--rendezvous-port", flags->rendezvous_port,
                  "Rank 0 of a data-parallel job on device i listens on this port + i; 0 = "
                  "never take rank 0 (other ranks still run here)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--threads", flags->threads,
                  "Intra-op CPU threads of a job that leaves threads at 0 (0 = the cores split "
                  "evenly between the devices)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  flags->caches.AddTo(cmd);
  cmd->add_option("--token-file", flags->token_file, "File holding this worker's bearer token");
  cmd->add_flag("--tls", flags->tls, "Connect to the controller with TLS");
  cmd->add_option("--tls-ca", flags->tls_ca, "PEM CA that signs the controller's certificate");
  cmd->add_option("--tls-cert", flags->tls_cert, "PEM client certificate for mTLS");
  cmd->add_option("--tls-key", flags->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--http-listen", flags->http_listen,
                  "Serve GET /metrics (Prometheus) over HTTP on host:port (port 0 = any free "
                  "port)");
  cmd->add_option("--http-tls-cert", flags->http_tls.cert_file,
                  "PEM certificate chain: serve --http-listen over HTTPS");
  cmd->add_option("--http-tls-key", flags->http_tls.key_file, "PEM private key of --http-tls-cert");
  cmd->add_option("--http-tls-client-ca", flags->http_tls.ca_file,
                  "PEM CA: HTTPS clients must present a certificate signed by it");
  cmd->add_option("--http-tokens", flags->http_tokens,
                  "Bearer tokens file (`scope token` per line, as ftcontroller's --tokens); "
                  "/metrics then needs a client or admin token");
  cmd->add_flag("--allow-insecure", flags->allow_insecure,
                "Serve --http-listen on a non-loopback address without --http-tokens or mTLS");
  cmd->add_option("--drain-seconds", flags->drain_seconds,
                  "On SIGTERM, the most time to checkpoint the running jobs and hand them back; "
                  "an unreachable or hung controller cannot stretch it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--log-level", flags->log.level, "trace|debug|info|warn|error")
      ->capture_default_str();
  cmd->add_option("--log-file", flags->log.file, "Also log to this file");
  cmd->callback([flags, exit_code] { *exit_code = Run(*flags); });
}

}  // namespace ftune::worker
