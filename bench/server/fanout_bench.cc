// Controller benchmark on loopback with the real SQLite store: event fan-out throughput and
// SubmitJob latency while 1, 10 and 100 watchers follow a running job. Prints figures.
//
//   controller_fanout_bench [--batches N] [--batch-size K] [--submits M]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

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
  int submits = 200;
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

int RunOnce(const Args& args, int watchers) {
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

  // Each watcher on its own channel (its own connection), as separate ftctl processes would.
  const int64_t total_events = 2 + 1 + int64_t{args.batches} * args.batch_size + 1;
  std::atomic<int64_t> delivered{0};
  std::vector<absl::Time> finished(watchers);
  std::vector<std::thread> readers;
  for (int w = 0; w < watchers; ++w) {
    readers.emplace_back([&, w] {
      auto stub = JobService::NewStub(*ftune::MakeChannel(options));
      grpc::ClientContext ctx;
      ftune::v1::WatchJobRequest request;
      request.set_job_id(job_id);
      auto reader = stub->WatchJob(&ctx, request);
      ftune::v1::JobEvent event;
      while (reader->Read(&event)) delivered.fetch_add(1, std::memory_order_relaxed);
      reader->Finish();
      finished[w] = absl::Now();
    });
  }
  while ((*controller)->manager().watcher_count() < static_cast<size_t>(watchers)) {
    std::this_thread::yield();
  }

  // Submits measured while the events flow.
  std::vector<double> submit_ms;
  std::thread submitter([&] {
    for (int i = 0; i < args.submits; ++i) {
      ftune::v1::SubmitJobRequest r;
      *r.mutable_spec() = Spec(i + 1);
      ftune::v1::SubmitJobResponse out;
      grpc::ClientContext ctx;
      const absl::Time t0 = absl::Now();
      jobs->SubmitJob(&ctx, r, &out);
      submit_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
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
  ftune::v1::CompleteJobRequest complete;
  complete.set_job_id(job_id);
  complete.set_lease_id(lease.lease_id());
  complete.set_worker_id(lease.job().worker_id());
  complete.set_outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ftune::v1::CompleteJobResponse completed;
  grpc::ClientContext complete_ctx;
  workers->CompleteJob(&complete_ctx, complete, &completed);
  for (auto& t : readers) t.join();
  submitter.join();
  const absl::Time last = *std::max_element(finished.begin(), finished.end());

  const double store_s = absl::ToDoubleSeconds(stored - start);
  const double fan_s = absl::ToDoubleSeconds(last - start);
  const int64_t expected = total_events * watchers;
  std::printf(
      "watchers=%3d  events=%lld  stored %.0f events/s (ReportEvents p50 %.2f ms p99 %.2f ms)  "
      "delivered %lld/%lld = %.0f deliveries/s  SubmitJob p50 %.2f ms p99 %.2f ms\n",
      watchers, static_cast<long long>(total_events),
      (args.batches * args.batch_size) / store_s, Percentile(report_ms, 0.5),
      Percentile(report_ms, 0.99), static_cast<long long>(delivered.load()),
      static_cast<long long>(expected), delivered.load() / fan_s, Percentile(submit_ms, 0.5),
      Percentile(submit_ms, 0.99));
  std::fflush(stdout);
  (*controller)->Shutdown(absl::Seconds(1));
  std::filesystem::remove_all(dir);
  return delivered.load() == expected ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batches")) args.batches = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch-size")) args.batch_size = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--submits")) args.submits = std::atoi(argv[i + 1]);
  }
  std::printf("controller fan-out: %d batches x %d events, %d submits alongside, SQLite "
              "synchronous=FULL in %s\n",
              args.batches, args.batch_size, args.submits,
              std::filesystem::temp_directory_path().c_str());
  int rc = 0;
  for (int watchers : {1, 10, 100}) rc |= RunOnce(args, watchers);
  return rc;
}
