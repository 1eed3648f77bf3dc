#include "worker/daemon/worker_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "tests/daemon/fakes.h"
#include "tests/support/promtool.h"
#include "worker/daemon/worker_daemon.h"

namespace ftune::daemon {
namespace {

namespace v1 = ::ftune::v1;
using ::testing::HasSubstr;
using ::testing::Not;

v1::JobEvent Progress(int64_t step, double loss, double samples_per_sec, int64_t total = 100) {
  v1::JobEvent event;
  v1::TrainProgress* p = event.mutable_train_progress();
  p->set_step(step);
  p->set_total_steps(total);
  p->set_loss(loss);
  p->set_samples_per_sec(samples_per_sec);
  return event;
}

v1::JobEvent Eval(int64_t step, double accuracy, double seconds) {
  v1::JobEvent event;
  event.mutable_eval_result()->set_step(step);
  event.mutable_eval_result()->set_accuracy(accuracy);
  event.mutable_eval_result()->set_seconds(seconds);
  return event;
}

v1::JobEvent Checkpoint(int64_t step) {
  v1::JobEvent event;
  event.mutable_checkpoint_saved()->set_step(step);
  event.mutable_checkpoint_saved()->set_path("/runs/x/checkpoint-" + std::to_string(step));
  return event;
}

v1::JobEvent Log(const std::string& message) {
  v1::JobEvent event;
  event.mutable_log()->set_message(message);
  return event;
}

v1::Job Job(const std::string& id) {
  v1::Job job;
  job.set_id(id);
  return job;
}

class WorkerMetricsTest : public ::testing::Test {
 protected:
  MetricsRegistry registry_;
  FakeClock clock_;
  WorkerMetrics metrics_{&registry_, &clock_};
};

TEST_F(WorkerMetricsTest, DerivesStepAndCheckpointTimesFromTheEventStream) {
  metrics_.OnJobStarted(Job("job-1"), "cpu");
  // Every job opens with the recipe and the dataset; neither moves the clocks.
  metrics_.OnJobEvent("job-1", Log("recipe: from scratch"));
  v1::JobEvent dataset;
  dataset.mutable_dataset_summary()->set_path("/data/ravdess");
  metrics_.OnJobEvent("job-1", dataset);
  metrics_.OnJobEvent("job-1", Progress(10, 1.5, 40));
  clock_.Advance(absl::Seconds(3));  // evaluating
  metrics_.OnJobEvent("job-1", Eval(10, 0.5, 3));
  clock_.Advance(absl::Seconds(2));  // saving
  metrics_.OnJobEvent("job-1", Checkpoint(10));
  clock_.Advance(absl::Seconds(10));  // ten steps
  metrics_.OnJobEvent("job-1", Progress(20, 0.75, 32));

  const std::string text = registry_.Render();
  EXPECT_THAT(text, HasSubstr("ftune_worker_running_jobs 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_jobs_started_total 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_train_samples_per_second{job=\"job-1\"} 32\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_train_loss{job=\"job-1\"} 0.75\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_eval_accuracy{job=\"job-1\"} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_train_progress_ratio{job=\"job-1\"} 0.2\n"));
  // (15 s - 3 s evaluating - 2 s saving) / 10 steps.
  EXPECT_THAT(text, HasSubstr("ftune_worker_step_seconds{job=\"job-1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_checkpoint_save_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_checkpoint_save_seconds_sum 2\n"));
  EXPECT_TRUE(testing::PromtoolCheckMetrics(text).ok()) << text;
}

TEST_F(WorkerMetricsTest, ACheckpointAfterAnotherStepsEventIsNotTimed) {
  metrics_.OnJobStarted(Job("job-1"), "cpu");
  metrics_.OnJobEvent("job-1", Progress(10, 1, 1));
  clock_.Advance(absl::Seconds(4));  // two more steps, then a scheduled save
  metrics_.OnJobEvent("job-1", Checkpoint(12));
  EXPECT_THAT(registry_.Render(), Not(HasSubstr("ftune_worker_checkpoint_save_seconds_count")));
}

TEST_F(WorkerMetricsTest, FinishedJobsLeaveAndHandBacksAreCounted) {
  metrics_.OnJobStarted(Job("job-1"), "cpu");
  metrics_.OnJobStarted(Job("job-2"), "cuda:0");
  metrics_.OnJobEvent("job-1", Progress(5, 2, 10));
  metrics_.OnJobEvent("job-2", Eval(5, 0.9, 1));
  metrics_.OnJobFinished("job-1", v1::JOB_OUTCOME_REQUEUE);
  metrics_.OnJobFinished("job-2", v1::JOB_OUTCOME_SUCCEEDED);
  metrics_.OnJobEvent("job-1", Progress(6, 2, 10));  // a late event of a gone job is ignored
  const std::string text = registry_.Render();
  EXPECT_THAT(text, HasSubstr("ftune_worker_running_jobs 0\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_hand_backs_total 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("job=\"job-1\"")));
  EXPECT_THAT(text, Not(HasSubstr("job=\"job-2\"")));
}

TEST_F(WorkerMetricsTest, DeviceMemoryIsReadAtScrapeTime) {
  double cuda_bytes = 1024;
  metrics_.WatchDeviceMemory([&] {
    return std::map<std::string, double>{{"cpu", ProcessResidentBytes()}, {"cuda:0", cuda_bytes}};
  });
  cuda_bytes = 4096;
  const std::string text = registry_.Render();
  EXPECT_THAT(text, HasSubstr("ftune_worker_device_memory_bytes{device=\"cuda:0\"} 4096\n"));
  EXPECT_GT(ProcessResidentBytes(), 1 << 20);
  EXPECT_TRUE(testing::PromtoolCheckMetrics(text).ok()) << text;
}

// The daemon shows the metrics every event before sending it, and the hand-back at shutdown.
TEST(WorkerDaemonMetricsTest, TheDaemonReportsEventsAndHandBacks) {
  MetricsRegistry registry;
  WorkerMetrics metrics(&registry);
  FakeController controller;
  ScriptedRunner runner;
  DaemonConfig config;
  config.worker_id = "worker-a";
  v1::Device cpu;
  cpu.set_name("cpu");
  config.devices.push_back(cpu);
  config.acquire_wait = absl::Seconds(5);
  config.events.linger = absl::Milliseconds(1);
  config.drain_timeout = absl::Seconds(1);
  auto daemon = WorkerDaemon::Create(config, &controller, &runner, &metrics);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  v1::Job job = Job("job-1");
  job.mutable_spec()->set_output_dir("/tmp/runs/job-1");
  controller.AddJob(job);
  (*daemon)->Start();
  // The runner's three progress events reached the controller, so the metrics saw them.
  ASSERT_TRUE(controller.Await([](const FakeController& c) {
    auto it = c.stored.find("job-1");
    return it != c.stored.end() && it->second.size() == 3;
  }));
  std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("ftune_worker_running_jobs 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_train_loss{job=\"job-1\"} 0\n"));

  (*daemon)->Shutdown();
  text = registry.Render();
  EXPECT_THAT(text, HasSubstr("ftune_worker_hand_backs_total 1\n"));
  EXPECT_THAT(text, HasSubstr("ftune_worker_running_jobs 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("job=\"job-1\"")));
}

}  // namespace
}  // namespace ftune::daemon
