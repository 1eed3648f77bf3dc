// Controller benchmark on loopback with the real SQLite store: event ingestion and fan-out
// throughput, SubmitJob latency, and heartbeats/s and their latency, while 1, 10 and 100
// watchers follow a running job and 4 clients submit jobs as fast as they can (a submit
// storm). Each watcher count runs --repeat times; the ratio line compares medians.
//
// The watchers run in a child process at lower CPU priority (nice 10). They stand for
// clients on other machines: on a small box, 100 streams' worth of reading would otherwise
// take the CPU from the controller itself, which nothing on the server side can prevent.
//
//   controller_fanout_bench [--batches N] [--batch-size K] [--submits M] [--repeat R]
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <map>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/time/clock.h"
#include "common/credentials.h"
#include "ftune/v1/job_service.grpc.pb.h"
#include "ftune/v1/worker.grpc.pb.h"
#include "server/controller.h"

namespace {

using ftune::v1::JobService;
using ftune::v1::WorkerService;

struct Args {
  int batches = 200;
  int batch_size = 10;
  int submits = 200;  // per submitting client
  int repeat = 3;
};

ftune::v1::JobSpec Spec(int i) {
  ftune::v1::JobSpec spec;
  spec.mutable_dataset()->set_path("/data");
  spec.set_model("tiny");
  spec.set_output_dir("/out/" + std::to_string(i));
  spec.set_device("cuda:9");  // stays queued: the benchmark worker has only a cpu
  return spec;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

// Follows one job's events with the callback API; counts them.
class WatchReader final : public grpc::ClientReadReactor<ftune::v1::JobEvent> {
 public:
  WatchReader(std::unique_ptr<JobService::Stub> stub, const std::string& job_id,
              std::atomic<int64_t>* delivered)
      : stub_(std::move(stub)), delivered_(delivered) {
    request_.set_job_id(job_id);
    stub_->async()->WatchJob(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    delivered_->fetch_add(1, std::memory_order_relaxed);
    StartRead(&event_);
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = absl::Now();
    cv_.notify_all();
  }
  // When the stream ended.
  absl::Time Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ != absl::InfinitePast(); });
    return done_;
  }

 private:
  std::unique_ptr<JobService::Stub> stub_;
  std::atomic<int64_t>* delivered_;
  grpc::ClientContext context_;
  ftune::v1::WatchJobRequest request_;
  ftune::v1::JobEvent event_;
  std::mutex mu_;
  std::condition_variable cv_;
  absl::Time done_ = absl::InfinitePast();
};

int RunOnce(const Args& args, int watchers, double* stored_per_second) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("ftune-bench-" + std::to_string(getpid()) + "-" +
                                                 std::to_string(watchers)))
          .string();
  std::filesystem::remove_all(dir);
  ftune::server::ControllerConfig config;
  config.listen = "127.0.0.1:0";
  config.data_dir = dir;
  config.manager.watcher_queue_limit = 1 << 16;  // measure throughput, not the cut-off
  auto controller = ftune::server::Controller::Start(config);
  if (!controller.ok()) {
    std::fprintf(stderr, "%s\n", controller.status().ToString().c_str());
    return 1;
  }
  ftune::ChannelOptions options;
  options.address = (*controller)->address();
  auto channel = *ftune::MakeChannel(options);
  auto jobs = JobService::NewStub(channel);
  auto workers = WorkerService::NewStub(channel);

  ftune::v1::RegisterWorkerRequest reg;
  reg.set_worker_id("bench");
  reg.add_devices()->set_name("cpu");
  ftune::v1::RegisterWorkerResponse registered;
  grpc::ClientContext reg_ctx;
  workers->RegisterWorker(&reg_ctx, reg, &registered);

  ftune::v1::SubmitJobRequest submit;
  *submit.mutable_spec() = Spec(0);
  submit.mutable_spec()->set_device("cpu");
  ftune::v1::SubmitJobResponse submitted;
  grpc::ClientContext submit_ctx;
  jobs->SubmitJob(&submit_ctx, submit, &submitted);
  ftune::v1::AcquireJobRequest acquire;
  acquire.set_worker_id("bench");
  acquire.add_free_devices("cpu");
  ftune::v1::AcquireJobResponse lease;
  grpc::ClientContext acquire_ctx;
  workers->AcquireJob(&acquire_ctx, acquire, &lease);
  const std::string job_id = lease.job().id();

  const int64_t total_events = 2 + 1 + int64_t{args.batches} * args.batch_size + 1;
  int from_watchers[2];
  if (pipe(from_watchers) != 0) return 1;
  const std::string count = std::to_string(watchers);
  const pid_t child = fork();
  if (child == 0) {
    dup2(from_watchers[1], STDOUT_FILENO);
    close(from_watchers[0]);
    setpriority(PRIO_PROCESS, 0, 10);
    execl("/proc/self/exe", "controller_fanout_bench", "--watch", options.address.c_str(),
          job_id.c_str(), count.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(from_watchers[1]);
  while ((*controller)->manager().watcher_count() < static_cast<size_t>(watchers)) {
    std::this_thread::yield();
  }

  // A submit storm while the events flow: 4 clients, each on its own connection.
  constexpr int kSubmitters = 4;
  std::vector<std::vector<double>> submit_ms_each(kSubmitters);
  std::vector<std::thread> submitters;
  for (int c = 0; c < kSubmitters; ++c) {
    submitters.emplace_back([&, c] {
      auto stub = JobService::NewStub(*ftune::MakeChannel(options));
      for (int i = 0; i < args.submits; ++i) {
        ftune::v1::SubmitJobRequest r;
        *r.mutable_spec() = Spec(c * args.submits + i + 1);
        ftune::v1::SubmitJobResponse out;
        grpc::ClientContext ctx;
        const absl::Time t0 = absl::Now();
        stub->SubmitJob(&ctx, r, &out);
        submit_ms_each[c].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      }
    });
  }

  // Heartbeats from another worker the whole time: they must not queue behind commits.
  std::atomic<bool> reporting{true};
  std::vector<double> heartbeat_ms;
  std::thread heartbeater([&] {
    auto stub = WorkerService::NewStub(*ftune::MakeChannel(options));
    ftune::v1::RegisterWorkerRequest r;
    r.set_worker_id("beater");
    r.add_devices()->set_name("cpu");
    ftune::v1::RegisterWorkerResponse out;
    grpc::ClientContext ctx;
    stub->RegisterWorker(&ctx, r, &out);
    while (reporting.load()) {
      ftune::v1::HeartbeatRequest beat;
      beat.set_worker_id("beater");
      ftune::v1::HeartbeatResponse heard;
      grpc::ClientContext beat_ctx;
      const absl::Time t0 = absl::Now();
      stub->Heartbeat(&beat_ctx, beat, &heard);
      heartbeat_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    }
  });

  const absl::Time start = absl::Now();
  std::vector<double> report_ms;
  for (int b = 1; b <= args.batches; ++b) {
    ftune::v1::ReportEventsRequest report;
    report.set_job_id(job_id);
    report.set_lease_id(lease.lease_id());
    report.set_worker_id(lease.job().worker_id());
    report.set_batch_id(b);
    for (int i = 0; i < args.batch_size; ++i) {
      auto* p = report.add_events()->mutable_train_progress();
      p->set_step(b * args.batch_size + i);
      p->set_loss(1.0 / (b + 1));
    }
    ftune::v1::ReportEventsResponse out;
    grpc::ClientContext ctx;
    const absl::Time t0 = absl::Now();
    workers->ReportEvents(&ctx, report, &out);
    report_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  const absl::Time stored = absl::Now();
  reporting.store(false);
  heartbeater.join();
  ftune::v1::CompleteJobRequest complete;
  complete.set_job_id(job_id);
  complete.set_lease_id(lease.lease_id());
  complete.set_worker_id(lease.job().worker_id());
  complete.set_outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ftune::v1::CompleteJobResponse completed;
  grpc::ClientContext complete_ctx;
  workers->CompleteJob(&complete_ctx, complete, &completed);
  std::string report;
  char buffer[256];
  for (ssize_t n; (n = read(from_watchers[0], buffer, sizeof(buffer))) > 0;) report.append(buffer, n);
  close(from_watchers[0]);
  waitpid(child, nullptr, 0);
  long long delivered = 0, last_nanos = 0;
  std::sscanf(report.c_str(), "%lld %lld", &delivered, &last_nanos);
  const absl::Time last = absl::FromUnixNanos(last_nanos);
  for (auto& t : submitters) t.join();
  std::vector<double> submit_ms;
  for (const auto& each : submit_ms_each) submit_ms.insert(submit_ms.end(), each.begin(), each.end());

  const double store_s = absl::ToDoubleSeconds(stored - start);
  *stored_per_second = (args.batches * args.batch_size) / store_s;
  const double fan_s = absl::ToDoubleSeconds(last - start);
  const int64_t expected = total_events * watchers;
  std::printf(
      "watchers=%3d  events=%lld  stored %.0f events/s (ReportEvents p50 %.2f ms p99 %.2f ms)  "
      "delivered %lld/%lld = %.0f deliveries/s  SubmitJob p50 %.2f ms p99 %.2f ms  "
      "heartbeats %.0f/s (p50 %.2f ms p99 %.2f ms)\n",
      watchers, static_cast<long long>(total_events),
      (args.batches * args.batch_size) / store_s, Percentile(report_ms, 0.5),
      Percentile(report_ms, 0.99), delivered, static_cast<long long>(expected),
      delivered / fan_s, Percentile(submit_ms, 0.5),
      Percentile(submit_ms, 0.99), heartbeat_ms.size() / store_s, Percentile(heartbeat_ms, 0.5),
      Percentile(heartbeat_ms, 0.99));
  std::fflush(stdout);
  (*controller)->Shutdown(absl::Seconds(1));
  std::filesystem::remove_all(dir);
  return delivered == expected ? 0 : 1;
}

// Child mode: `n` watchers of `job_id`, each on its own channel (its own connection), as
// separate ftctl processes would be, written as a program following many streams is:
// callback readers sharing gRPC's threads. Prints the events delivered and when the last
// stream ended (Unix nanoseconds).
int WatchOnly(const std::string& address, const std::string& job_id, int n) {
  ftune::ChannelOptions options;
  options.address = address;
  std::atomic<int64_t> delivered{0};
  std::vector<std::unique_ptr<WatchReader>> readers;
  for (int w = 0; w < n; ++w) {
    readers.push_back(std::make_unique<WatchReader>(
        JobService::NewStub(*ftune::MakeChannel(options)), job_id, &delivered));
  }
  absl::Time last = absl::InfinitePast();
  for (auto& reader : readers) last = std::max(last, reader->Wait());
  std::printf("%lld %lld\n", static_cast<long long>(delivered.load()),
              static_cast<long long>(absl::ToUnixNanos(last)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && !std::strcmp(argv[1], "--watch")) {
    return WatchOnly(argv[2], argv[3], std::atoi(argv[4]));
  }
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batches")) args.batches = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch-size")) args.batch_size = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--submits")) args.submits = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeat")) args.repeat = std::max(1, std::atoi(argv[i + 1]));
  }
  std::printf("controller fan-out: %d batches x %d events, 4 x %d submits alongside, SQLite "
              "synchronous=FULL in %s\n",
              args.batches, args.batch_size, args.submits,
              std::filesystem::temp_directory_path().c_str());
  int rc = 0;
  std::map<int, std::vector<double>> rates;
  for (int r = 0; r < args.repeat; ++r) {
    for (int watchers : {1, 10, 100}) rc |= RunOnce(args, watchers, &rates[watchers].emplace_back());
  }
  std::printf("events stored per second, median of %d: 1 watcher %.0f, 100 watchers %.0f; "
              "ratio %.2f\n",
              args.repeat, Percentile(rates[1], 0.5), Percentile(rates[100], 0.5),
              Percentile(rates[100], 0.5) / Percentile(rates[1], 0.5));
  return rc;
}
