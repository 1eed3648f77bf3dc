// Event fan-out driven by hand: replay equals live, many watchers, a slow watcher is cut off
// with the resume point while the others carry on, and watchers end after the terminal event.
#include "server/event_log.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/job_manager.h"
#include "tests/server/test_util.h"

namespace ftune::server {
namespace {

using testing::Drained;
using testing::DrainInto;
using testing::ValidSpec;

class EventFanOutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    JobManagerOptions options;
    options.watcher_queue_limit = 8;
    manager_ = std::move(*JobManager::Create(&store_, &clock_, options));
    ftune::v1::RegisterWorkerRequest worker;
    worker.set_worker_id("w1");
    worker.add_devices()->set_name("cpu");
    ASSERT_TRUE(manager_->RegisterWorker(worker).ok());
    job_id_ = manager_->SubmitJob(ValidSpec())->job.id();
    ftune::v1::AcquireJobRequest acquire;
    acquire.set_worker_id("w1");
    acquire.add_free_devices("cpu");
    manager_->AcquireJob(acquire, [&](auto r) { lease_ = r->lease_id(); });
    ASSERT_FALSE(lease_.empty());
  }

  // Reports `n` progress events as one batch.
  void Report(int n) {
    ftune::v1::ReportEventsRequest request;
    request.set_job_id(job_id_);
    request.set_lease_id(lease_);
    request.set_worker_id("w1");
    request.set_batch_id(++batch_);
    for (int i = 0; i < n; ++i) request.add_events()->mutable_train_progress()->set_step(++step_);
    ASSERT_TRUE(manager_->ReportEvents(request).ok());
    manager_->Flush();  // fan-out runs on its own thread
  }

  void Finish() {
    ftune::v1::CompleteJobRequest request;
    request.set_job_id(job_id_);
    request.set_lease_id(lease_);
    request.set_worker_id("w1");
    request.set_outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
    ASSERT_TRUE(manager_->CompleteJob(request).ok());
    manager_->Flush();
  }

  MemoryJobStore store_;
  FakeClock clock_;
  std::unique_ptr<JobManager> manager_;
  std::string job_id_;
  std::string lease_;
  uint64_t batch_ = 0;
  int64_t step_ = 0;
};

TEST_F(EventFanOutTest, LiveWatcherSeesWhatReplayShows) {
  int notified = 0;
  auto live = manager_->WatchJob(job_id_, 0, [&] { ++notified; });
  ASSERT_TRUE(live.ok());
  Drained live_events;
  DrainInto(**live, &live_events);  // queued, assigned (replayed)
  for (int round = 0; round < 5; ++round) {
    Report(3);
    DrainInto(**live, &live_events);
  }
  Finish();
  DrainInto(**live, &live_events);
  EXPECT_GT(notified, 0);
  ASSERT_TRUE(live_events.done);
  EXPECT_TRUE(live_events.status.ok()) << live_events.status;

  auto replay = manager_->WatchJob(job_id_, 0, [] {});
  Drained replayed;
  DrainInto(**replay, &replayed);
  ASSERT_TRUE(replayed.done);
  EXPECT_TRUE(replayed.status.ok());
  ASSERT_EQ(live_events.events.size(), replayed.events.size());
  ASSERT_EQ(replayed.events.size(), 2u + 1u + 15u + 1u);
  for (size_t i = 0; i < replayed.events.size(); ++i) {
    EXPECT_EQ(replayed.events[i].SerializeAsString(), live_events.events[i].SerializeAsString());
    EXPECT_EQ(replayed.events[i].seq(), static_cast<int64_t>(i + 1));
  }
}

TEST_F(EventFanOutTest, ReplayFromTheMiddleThenLive) {
  Report(4);  // seq 3 = running, 4..7 progress
  auto watch = manager_->WatchJob(job_id_, 5, [] {});
  Drained got;
  DrainInto(**watch, &got);
  ASSERT_EQ(got.events.size(), 2u);
  EXPECT_EQ(got.events[0].seq(), 6);
  Report(2);
  DrainInto(**watch, &got);
  ASSERT_EQ(got.events.size(), 4u);
  EXPECT_EQ(got.events[3].seq(), 9);
  EXPECT_FALSE(got.done);
}

TEST_F(EventFanOutTest, ReplayLongerThanOnePageAndQueueLimit) {
  // More events than a replay page (256) and far more than the live limit (8): replay comes
  // from the store in pages, so a late watcher is not cut off.
  for (int i = 0; i < 30; ++i) Report(20);
  Finish();
  auto watch = manager_->WatchJob(job_id_, 0, [] {});
  Drained got;
  DrainInto(**watch, &got);
  ASSERT_TRUE(got.done);
  EXPECT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(got.events.size(), 2u + 1u + 600u + 1u);
}

TEST_F(EventFanOutTest, HundredWatchersAllGetEverythingAndASlowOneIsCutOff) {
  constexpr int kWatchers = 100;
  std::vector<std::shared_ptr<Watch>> watches;
  std::vector<Drained> got(kWatchers);
  for (int i = 0; i < kWatchers; ++i) {
    watches.push_back(*manager_->WatchJob(job_id_, 0, [] {}));
  }
  // Watcher 0 takes one event and then never asks again (its write never completes).
  Watch::Next first = watches[0]->Poll();
  ASSERT_EQ(first.kind, Watch::Kind::kEvent);
  ASSERT_EQ(first.event.seq(), 1);
  for (int round = 0; round < 10; ++round) {
    Report(5);
    for (int i = 1; i < kWatchers; ++i) DrainInto(*watches[i], &got[i]);
  }
  Finish();
  for (int i = 1; i < kWatchers; ++i) {
    DrainInto(*watches[i], &got[i]);
    ASSERT_TRUE(got[i].done) << i;
    EXPECT_TRUE(got[i].status.ok()) << i;
    EXPECT_EQ(got[i].events.size(), 2u + 1u + 50u + 1u) << i;
  }
  // The slow one: once it asks again, it hears it fell behind and where to resume.
  Watch::Next next = watches[0]->Poll();
  ASSERT_EQ(next.kind, Watch::Kind::kDone);
  EXPECT_EQ(next.status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(next.status.message(), "watcher fell behind; resume with after_seq=1");
  // Resuming from there gets the rest, without gap or duplicate.
  auto resumed = manager_->WatchJob(job_id_, 1, [] {});
  Drained rest;
  DrainInto(**resumed, &rest);
  ASSERT_TRUE(rest.done);
  ASSERT_EQ(rest.events.size(), 53u);
  EXPECT_EQ(rest.events.front().seq(), 2);
  EXPECT_EQ(rest.events.back().seq(), 54);
}

TEST_F(EventFanOutTest, WatchOfEndedJobEndsAfterReplay) {
  Finish();
  auto all = manager_->WatchJob(job_id_, 0, [] {});
  Drained got;
  DrainInto(**all, &got);
  ASSERT_TRUE(got.done);
  EXPECT_EQ(got.events.size(), 3u);  // queued, assigned, succeeded
  auto none = manager_->WatchJob(job_id_, 3, [] {});
  Drained empty;
  DrainInto(**none, &empty);
  EXPECT_TRUE(empty.done);
  EXPECT_TRUE(empty.events.empty());
  EXPECT_TRUE(empty.status.ok());
}

TEST_F(EventFanOutTest, ClosedWatchIsUnsubscribedAndNotNotified) {
  int notified = 0;
  auto watch = manager_->WatchJob(job_id_, 0, [&] { ++notified; });
  EXPECT_EQ(manager_->watcher_count(), 1u);
  (*watch)->Close();
  EXPECT_EQ(manager_->watcher_count(), 0u);
  Report(1);
  EXPECT_EQ(notified, 0);
}

TEST_F(EventFanOutTest, ShutdownEndsWatchesWithResumePoint) {
  auto watch = manager_->WatchJob(job_id_, 0, [] {});
  Drained got;
  DrainInto(**watch, &got);
  manager_->EndLongCalls();
  DrainInto(**watch, &got);
  ASSERT_TRUE(got.done);
  EXPECT_EQ(got.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(got.status.message(), "ftcontroller is shutting down; resume with after_seq=2");
}

// Events already stored but not yet fanned out when a watcher subscribes reach it through its
// replay, not its live queue: subscribing behind a backlog far larger than the queue limit
// does not cut the watcher off.
TEST(EventFanOutBacklogTest, ANewWatcherIsNotCutOffByEventsPublishedBeforeIt) {
  MemoryJobStore store;
  FakeClock clock;
  JobManagerOptions options;
  options.watcher_queue_limit = 8;
  options.watch_batch_window = absl::Hours(1);  // nothing leaves the fan-out queue unflushed
  auto manager = std::move(*JobManager::Create(&store, &clock, options));
  ftune::v1::RegisterWorkerRequest worker;
  worker.set_worker_id("w1");
  worker.add_devices()->set_name("cpu");
  ASSERT_TRUE(manager->RegisterWorker(worker).ok());
  const std::string job_id = manager->SubmitJob(ValidSpec())->job.id();
  ftune::v1::AcquireJobRequest acquire;
  acquire.set_worker_id("w1");
  acquire.add_free_devices("cpu");
  std::string lease;
  manager->AcquireJob(acquire, [&](auto r) { lease = r->lease_id(); });
  ftune::v1::ReportEventsRequest report;
  report.set_job_id(job_id);
  report.set_lease_id(lease);
  report.set_worker_id("w1");
  report.set_batch_id(1);
  for (int i = 1; i <= 100; ++i) report.add_events()->mutable_train_progress()->set_step(i);
  ASSERT_TRUE(manager->ReportEvents(report).ok());  // stored; still queued for fan-out

  auto watch = manager->WatchJob(job_id, 0, [] {});
  ASSERT_TRUE(watch.ok());
  manager->Flush();
  Drained got;
  DrainInto(**watch, &got);
  EXPECT_FALSE(got.done) << got.status;
  EXPECT_EQ(got.events.size(), 2u + 1u + 100u);
}

TEST_F(EventFanOutTest, UnknownJobAndBadSeq) {
  EXPECT_EQ(manager_->WatchJob("job-x", 0, [] {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->WatchJob(job_id_, -1, [] {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ftune::server
