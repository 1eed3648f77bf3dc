#include "worker/daemon/worker_daemon.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "tests/daemon/fakes.h"
#include "tests/support/process.h"

namespace ftune::daemon {
namespace {

namespace v1 = ::ftune::v1;
using train::StopReason;

v1::Device Dev(const std::string& name) {
  v1::Device device;
  device.set_name(name);
  device.set_kind(name == "cpu" ? v1::DEVICE_KIND_CPU : v1::DEVICE_KIND_CUDA);
  return device;
}

v1::Job MakeJob(const std::string& id, const std::string& root = "/tmp") {
  v1::Job job;
  job.set_id(id);
  job.mutable_spec()->set_model("tiny");
  job.mutable_spec()->mutable_dataset()->set_path(root + "/dataset");
  job.mutable_spec()->set_output_dir(root + "/runs/" + id);
  return job;
}

DaemonConfig Config(std::vector<std::string> devices = {"cpu"}) {
  DaemonConfig config;
  config.worker_id = "worker-a";
  config.host = "box";
  config.version = "test";
  for (const auto& name : devices) config.devices.push_back(Dev(name));
  config.acquire_wait = absl::Seconds(5);
  config.reconnect = {absl::Milliseconds(1), absl::Milliseconds(10)};
  config.events.linger = absl::Milliseconds(1);
  config.events.backoff = {absl::Milliseconds(1), absl::Milliseconds(10)};
  config.flush_timeout = absl::Seconds(10);
  config.drain_timeout = absl::Seconds(1);
  return config;
}

const v1::CompleteJobRequest* Completion(const FakeController& c, const std::string& id) {
  for (const auto& completion : c.completions) {
    if (completion.job_id() == id) return &completion;
  }
  return nullptr;
}

TEST(WorkerDaemonTest, RegistersRunsAJobAndCompletesIt) {
  FakeController controller;
  ScriptedRunner runner(/*finish_at_once=*/true);
  auto daemon = WorkerDaemon::Create(Config(), &controller, &runner);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  controller.AddJob(MakeJob("job-1"));
  (*daemon)->Start();

  ASSERT_TRUE(controller.Await([](const FakeController& c) { return !c.completions.empty(); }));
  (*daemon)->Shutdown();

  ASSERT_FALSE(controller.registrations.empty());
  EXPECT_EQ(controller.registrations[0].worker_id(), "worker-a");
  ASSERT_EQ(controller.registrations[0].devices_size(), 1);
  EXPECT_EQ(controller.registrations[0].devices(0).name(), "cpu");
  ASSERT_FALSE(controller.acquires.empty());
  EXPECT_EQ(controller.acquires[0].free_devices(0), "cpu");

  const v1::CompleteJobRequest& done = controller.completions[0];
  EXPECT_EQ(done.job_id(), "job-1");
  EXPECT_EQ(done.lease_id(), "lease-job-1");
  EXPECT_EQ(done.outcome(), v1::JOB_OUTCOME_SUCCEEDED);
  EXPECT_EQ(done.best_checkpoint(), "/tmp/runs/job-1/best");
  EXPECT_EQ(done.best_metric_name(), "accuracy");
  EXPECT_DOUBLE_EQ(done.best_metric(), 0.75);
  // Every event reached the controller before the job was completed.
  ASSERT_EQ(controller.stored["job-1"].size(), 3u);
  EXPECT_EQ(controller.stored["job-1"][2].train_progress().step(), 3);
  EXPECT_EQ(runner.started[0], std::make_pair(std::string("job-1"), std::string("cpu")));
}

TEST(WorkerDaemonTest, CancelVerdictFromHeartbeatCancelsTheJob) {
  FakeController controller;
  ScriptedRunner runner;
  auto daemon = WorkerDaemon::Create(Config(), &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  controller.AddJob(MakeJob("job-1"));
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return !r.started.empty(); }));
  // The heartbeat carries the lease...
  ASSERT_TRUE(controller.Await([](const FakeController& c) {
    return !c.heartbeats.empty() && c.heartbeats.back().leases_size() == 1;
  }));
  EXPECT_EQ(controller.heartbeats.back().leases(0).lease_id(), "lease-job-1");
  // ...and brings the user's cancel back.
  controller.SetVerdict("job-1", v1::LEASE_VERDICT_CANCEL);
  ASSERT_TRUE(
      controller.Await([](const FakeController& c) { return Completion(c, "job-1") != nullptr; }));
  EXPECT_EQ(Completion(controller, "job-1")->outcome(), v1::JOB_OUTCOME_CANCELLED);
  (*daemon)->Shutdown();
  EXPECT_EQ(runner.stop_reasons["job-1"], StopReason::kCancel);
}

TEST(WorkerDaemonTest, LostLeaseStopsTheJobWithoutReporting) {
  FakeController controller;
  ScriptedRunner runner;
  auto daemon = WorkerDaemon::Create(Config(), &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  controller.AddJob(MakeJob("job-1"));
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return !r.started.empty(); }));
  controller.SetVerdict("job-1", v1::LEASE_VERDICT_LOST);
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.returned == 1; }));
  (*daemon)->Shutdown();
  EXPECT_EQ(runner.stop_reasons["job-1"], StopReason::kLeaseLost);
  EXPECT_TRUE(controller.completions.empty());
}

TEST(WorkerDaemonTest, UnrenewedLeaseStopsTheJob) {
  FakeController controller;
  ScriptedRunner runner;
  auto daemon = WorkerDaemon::Create(Config(), &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  controller.AddJob(MakeJob("job-1"), /*lease_seconds=*/0.05);
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return !r.started.empty(); }));
  // Partitioned from the controller: after the lease runs out the job must stop writing.
  controller.SetDown(absl::UnavailableError("network down"));
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.returned == 1; }));
  EXPECT_EQ(runner.stop_reasons["job-1"], StopReason::kLeaseLost);
  (*daemon)->Shutdown();
  EXPECT_TRUE(controller.completions.empty());
}

TEST(WorkerDaemonTest, ShutdownHandsRunningJobsBack) {
  FakeController controller;
  ScriptedRunner runner;
  auto daemon = WorkerDaemon::Create(Config(), &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  controller.AddJob(MakeJob("job-1"));
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return !r.started.empty(); }));
  EXPECT_EQ((*daemon)->RunningJobs(), std::vector<std::string>{"job-1"});

  (*daemon)->Shutdown();  // returns once the job is handed back

  EXPECT_EQ(runner.stop_reasons["job-1"], StopReason::kHandBack);
  const v1::CompleteJobRequest* done = Completion(controller, "job-1");
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->outcome(), v1::JOB_OUTCOME_REQUEUE);
  EXPECT_EQ(done->last_checkpoint(), "/tmp/runs/job-1/checkpoint-3");
  EXPECT_EQ(controller.stored["job-1"].size(), 3u);
  EXPECT_TRUE((*daemon)->RunningJobs().empty());
}

TEST(WorkerDaemonTest, ShutdownWhileIdleEndsTheLongPoll) {
  FakeController controller;
  ScriptedRunner runner;
  DaemonConfig config = Config();
  config.acquire_wait = absl::Hours(1);
  auto daemon = WorkerDaemon::Create(config, &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  (*daemon)->Start();
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return !c.acquires.empty(); }));
  const absl::Time start = absl::Now();
  (*daemon)->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST(WorkerDaemonTest, RunsOneJobPerDevice) {
  FakeController controller;
  ScriptedRunner runner;
  auto daemon = WorkerDaemon::Create(Config({"cpu", "cuda:0"}), &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  for (const char* id : {"job-1", "job-2", "job-3"}) controller.AddJob(MakeJob(id));
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.started.size() == 2; }));
  EXPECT_NE(runner.started[0].second, runner.started[1].second);
  // With both devices busy, no acquire is made until one frees up.
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return c.acquires.size() >= 2; }));
  for (const auto& acquire : controller.acquires) EXPECT_GT(acquire.free_devices_size(), 0);
  EXPECT_EQ(runner.started.size(), 2u);

  const std::string first = runner.started[0].first;
  const std::string freed = runner.started[0].second;
  runner.Finish(first);
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.started.size() == 3; }));
  EXPECT_EQ(runner.started[2].first, "job-3");
  EXPECT_EQ(runner.started[2].second, freed);
  for (const char* id : {"job-1", "job-2", "job-3"}) runner.Finish(id);
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return c.completions.size() == 3; }));
  (*daemon)->Shutdown();
  EXPECT_EQ(runner.max_running, 2);
}

TEST(WorkerDaemonTest, JobOutsideAllowedRootsFailsAtOnce) {
  const std::string tmp = testing::MakeTempDir("daemon-roots");
  std::filesystem::create_directories(tmp + "/allowed");
  FakeController controller;
  ScriptedRunner runner(/*finish_at_once=*/true);
  DaemonConfig config = Config();
  config.allowed_roots = {tmp + "/allowed"};
  auto daemon = WorkerDaemon::Create(config, &controller, &runner);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  v1::Job job = MakeJob("job-1", tmp + "/allowed");
  job.mutable_spec()->mutable_dataset()->set_path(tmp + "/allowed/../elsewhere");
  controller.AddJob(job);
  (*daemon)->Start();
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return !c.completions.empty(); }));
  (*daemon)->Shutdown();
  EXPECT_EQ(controller.completions[0].outcome(), v1::JOB_OUTCOME_FAILED);
  EXPECT_TRUE(absl::StrContains(controller.completions[0].error(), "dataset.path"))
      << controller.completions[0].error();
  EXPECT_TRUE(absl::StrContains(controller.completions[0].error(), "elsewhere"));
  EXPECT_TRUE(runner.started.empty());
}

TEST(WorkerDaemonTest, ReconnectsAndRegistersAgainAfterTheControllerComesBack) {
  FakeController controller;
  controller.SetDown(absl::UnavailableError("connection refused"));
  ScriptedRunner runner(/*finish_at_once=*/true);
  DaemonConfig config = Config();
  config.acquire_wait = absl::Milliseconds(20);
  auto daemon = WorkerDaemon::Create(config, &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  (*daemon)->Start();
  ASSERT_TRUE(
      controller.Await([](const FakeController& c) { return c.registrations.size() >= 3; }));
  controller.SetDown(absl::OkStatus());
  controller.AddJob(MakeJob("job-1"));
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return !c.completions.empty(); }));

  // A controller that lost track of the worker asks it to register again.
  const size_t before = [&] {
    size_t n = 0;
    controller.Await([&](const FakeController& c) {
      n = c.registrations.size();
      return true;
    });
    return n;
  }();
  controller.ForgetWorker();
  ASSERT_TRUE(controller.Await(
      [before](const FakeController& c) { return c.registrations.size() > before; }));
  // An acquire that finds the worker unknown also registers again.
  controller.FailAcquires(1, absl::NotFoundError("unknown worker worker-a"));
  const size_t before2 = controller.registrations.size();
  ASSERT_TRUE(controller.Await(
      [before2](const FakeController& c) { return c.registrations.size() > before2; }));
  (*daemon)->Shutdown();
}

TEST(WorkerDaemonTest, RejectsBadConfigs) {
  FakeController controller;
  ScriptedRunner runner;
  DaemonConfig config = Config();
  config.worker_id.clear();
  EXPECT_FALSE(WorkerDaemon::Create(config, &controller, &runner).ok());
  config = Config({"cpu", "cpu"});
  EXPECT_FALSE(WorkerDaemon::Create(config, &controller, &runner).ok());
  config = Config({});
  EXPECT_FALSE(WorkerDaemon::Create(config, &controller, &runner).ok());
  config = Config();
  config.allowed_roots = {"/does/not/exist"};
  EXPECT_FALSE(WorkerDaemon::Create(config, &controller, &runner).ok());
}

TEST(WorkerDaemonTest, RejectsABadRendezvous) {
  FakeController controller;
  ScriptedRunner runner;
  DaemonConfig config = Config({"cpu", "cuda:0"});
  config.rendezvous_port = 29500;  // without a host other ranks could not reach it
  auto no_host = WorkerDaemon::Create(config, &controller, &runner);
  EXPECT_EQ(no_host.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(no_host.status().message(), "rendezvous host"));
  config.rendezvous_host = "10.0.0.7";
  config.rendezvous_port = 65535;  // cuda:0 would listen on 65536
  auto overflow = WorkerDaemon::Create(config, &controller, &runner);
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(overflow.status().message(), "65535"));
  config.rendezvous_port = 0;  // never rank 0: no host needed
  config.rendezvous_host.clear();
  EXPECT_TRUE(WorkerDaemon::Create(config, &controller, &runner).ok());
}

// Two ranks of one data-parallel job on this worker's two devices: each runs with its
// rendezvous as DistributedOptions, heartbeats and completes under its own lease, and only
// rank 0's events reach the controller.
TEST(WorkerDaemonTest, RunsEachRankOfADataParallelJobWithItsRendezvous) {
  FakeController controller;
  ScriptedRunner runner;
  DaemonConfig config = Config({"cuda:0", "cuda:1"});
  config.rendezvous_host = "10.0.0.7";
  config.rendezvous_port = 29500;
  auto daemon = WorkerDaemon::Create(config, &controller, &runner);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  v1::Job job = MakeJob("job-1");
  job.set_attempt(3);
  job.mutable_spec()->set_world_size(3);
  for (uint32_t rank : {0u, 2u}) {
    v1::Rendezvous rendezvous;
    rendezvous.set_rank(rank);
    rendezvous.set_world_size(3);
    rendezvous.set_host("10.0.0.7");
    rendezvous.set_port(29500);
    controller.AddRank(job, rendezvous, "lease-rank" + std::to_string(rank));
  }
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.started.size() == 2; }));
  ASSERT_FALSE(controller.registrations.empty());
  EXPECT_EQ(controller.registrations[0].rendezvous_host(), "10.0.0.7");
  EXPECT_EQ(controller.registrations[0].rendezvous_port(), 29500u);
  EXPECT_EQ((*daemon)->RunningJobs(), (std::vector<std::string>{"job-1", "job-1"}));

  std::set<int> ranks;
  for (const train::Placement& placement : runner.placements) {
    const train::DistributedOptions& d = placement.distributed;
    SCOPED_TRACE(placement.device);
    ranks.insert(d.rank);
    // Acquired in turn: rank 0 on the first free device, rank 2 on the other.
    EXPECT_EQ(placement.device, d.rank == 0 ? "cuda:0" : "cuda:1");
    EXPECT_EQ(d.world_size, 3);
    EXPECT_EQ(d.host, "10.0.0.7");
    EXPECT_EQ(d.port, 29500);
    EXPECT_TRUE(d.rank0_serves_store);
    EXPECT_EQ(d.prefix, "job-1/3/");
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 2}));
  // Both leases are renewed, each by its own id.
  ASSERT_TRUE(controller.Await([](const FakeController& c) {
    return !c.heartbeats.empty() && c.heartbeats.back().leases_size() == 2;
  }));
  std::set<std::string> renewed;
  for (const auto& lease : controller.heartbeats.back().leases()) {
    EXPECT_EQ(lease.job_id(), "job-1");
    renewed.insert(lease.lease_id());
  }
  EXPECT_EQ(renewed, (std::set<std::string>{"lease-rank0", "lease-rank2"}));

  runner.Finish("job-1");
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return c.completions.size() == 2; }));
  (*daemon)->Shutdown();
  std::set<std::string> completed;
  for (const auto& done : controller.completions) {
    EXPECT_EQ(done.outcome(), v1::JOB_OUTCOME_SUCCEEDED);
    completed.insert(done.lease_id());
  }
  EXPECT_EQ(completed, (std::set<std::string>{"lease-rank0", "lease-rank2"}));
  // Each rank emitted three progress events; only rank 0's were reported.
  EXPECT_EQ(controller.stored["job-1"].size(), 3u);
  for (const auto& report : controller.reports) EXPECT_EQ(report.lease_id(), "lease-rank0");
}

TEST(WorkerDaemonTest, LostGangStopsEveryRankWithoutReporting) {
  FakeController controller;
  ScriptedRunner runner;
  auto daemon = WorkerDaemon::Create(Config({"cuda:0", "cuda:1"}), &controller, &runner);
  ASSERT_TRUE(daemon.ok());
  v1::Job job = MakeJob("job-1");
  for (uint32_t rank : {1u, 2u}) {
    v1::Rendezvous rendezvous;
    rendezvous.set_rank(rank);
    rendezvous.set_world_size(3);
    rendezvous.set_host("elsewhere");
    rendezvous.set_port(29500);
    controller.AddRank(job, rendezvous, "lease-rank" + std::to_string(rank));
  }
  (*daemon)->Start();
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.started.size() == 2; }));
  // Another rank's lease ran out: the controller ended the gang attempt.
  controller.SetVerdict("job-1", v1::LEASE_VERDICT_LOST);
  ASSERT_TRUE(runner.Await([](const ScriptedRunner& r) { return r.returned == 2; }));
  (*daemon)->Shutdown();
  EXPECT_EQ(runner.stop_reasons["job-1"], StopReason::kLeaseLost);
  EXPECT_TRUE(controller.completions.empty());
  EXPECT_TRUE(controller.reports.empty());  // neither is rank 0
}

}  // namespace
}  // namespace ftune::daemon
