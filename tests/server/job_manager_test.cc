// JobManager with the in-memory store and a fake clock: lifecycle, leases, restarts, cancel in
// every state, priorities, device matching, idempotency and spec validation.
#include "server/job_manager.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "common/job_spec.h"
#include "tests/server/test_util.h"

namespace ftune::server {
namespace {

using ftune::v1::JobState;
using testing::ValidSpec;

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(absl::Duration retry_backoff = absl::ZeroDuration(),
              absl::Duration event_retention = absl::InfiniteDuration()) {
    manager_.reset();
    JobManagerOptions options;
    options.event_retention = event_retention;
    options.lease = absl::Seconds(30);
    options.heartbeat = absl::Seconds(10);
    options.watcher_queue_limit = 16;
    options.retry_backoff = retry_backoff;
    auto manager = JobManager::Create(store_.get(), &clock_, options);
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
  }

  void Register(const std::string& id, std::vector<std::string> devices = {"cpu"}) {
    ftune::v1::RegisterWorkerRequest request;
    request.set_worker_id(id);
    request.set_host("box");
    for (const std::string& d : devices) request.add_devices()->set_name(d);
    ASSERT_TRUE(manager_->RegisterWorker(request).ok());
  }

  ftune::v1::Job Submit(ftune::v1::JobSpec spec) {
    auto result = manager_->SubmitJob(spec);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->job : ftune::v1::Job();
  }

  // Non-waiting acquire: the leased job, or nullopt.
  std::optional<ftune::v1::AcquireJobResponse> Acquire(const std::string& worker,
                                                       std::vector<std::string> free = {"cpu"}) {
    ftune::v1::AcquireJobRequest request;
    request.set_worker_id(worker);
    for (const std::string& d : free) request.add_free_devices(d);
    request.set_wait_seconds(0);
    std::optional<ftune::v1::AcquireJobResponse> out;
    manager_->AcquireJob(request, [&](absl::StatusOr<ftune::v1::AcquireJobResponse> r) {
      ASSERT_TRUE(r.ok()) << r.status();
      if (r->has_job()) out = *r;
    });
    return out;
  }

  absl::StatusOr<ftune::v1::ReportEventsResponse> Report(
      const ftune::v1::AcquireJobResponse& lease, uint64_t batch, int progress_events) {
    ftune::v1::ReportEventsRequest request;
    request.set_job_id(lease.job().id());
    request.set_lease_id(lease.lease_id());
    request.set_worker_id(lease.job().worker_id());
    request.set_batch_id(batch);
    for (int i = 0; i < progress_events; ++i) {
      auto* p = request.add_events()->mutable_train_progress();
      p->set_step(i + 1);
      p->set_total_steps(100);
    }
    return manager_->ReportEvents(request);
  }

  absl::StatusOr<ftune::v1::CompleteJobResponse> Complete(
      const ftune::v1::AcquireJobResponse& lease, ftune::v1::JobOutcome outcome,
      const std::string& error = "") {
    ftune::v1::CompleteJobRequest request;
    request.set_job_id(lease.job().id());
    request.set_lease_id(lease.lease_id());
    request.set_worker_id(lease.job().worker_id());
    request.set_outcome(outcome);
    request.set_error(error);
    return manager_->CompleteJob(request);
  }

  ftune::v1::LeaseVerdict Beat(const std::string& worker,
                               const ftune::v1::AcquireJobResponse& lease) {
    ftune::v1::HeartbeatRequest request;
    request.set_worker_id(worker);
    auto* renewal = request.add_leases();
    renewal->set_job_id(lease.job().id());
    renewal->set_lease_id(lease.lease_id());
    auto response = manager_->Heartbeat(request);
    EXPECT_TRUE(response.ok());
    return response->leases(0).verdict();
  }

  JobState StateOf(const std::string& id) { return manager_->GetJob(id)->state(); }

  std::vector<ftune::v1::JobEvent> AllEvents(const std::string& id) {
    auto watch = manager_->WatchJob(id, 0, [] {});
    EXPECT_TRUE(watch.ok());
    testing::Drained drained;
    testing::DrainInto(**watch, &drained);
    return drained.events;
  }

  std::unique_ptr<MemoryJobStore> store_ = std::make_unique<MemoryJobStore>();
  FakeClock clock_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, SubmitRunSucceedWithGaplessEvents) {
  Register("w1");
  ftune::v1::Job job = Submit(ValidSpec());
  EXPECT_EQ(job.state(), ftune::v1::JOB_STATE_QUEUED);
  // Defaults are written out in the stored spec: for a preset, the from-scratch recipe's.
  EXPECT_EQ(job.spec().training().epochs(), RecipeFor("tiny").epochs);
  EXPECT_EQ(job.spec().device(), "auto");

  auto lease = Acquire("w1");
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job().id(), job.id());
  EXPECT_EQ(lease->device(), "cpu");
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_ASSIGNED);

  auto reported = Report(*lease, 1, 3);
  ASSERT_TRUE(reported.ok()) << reported.status();
  EXPECT_EQ(reported->verdict(), ftune::v1::LEASE_VERDICT_OK);
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(manager_->GetJob(job.id())->step(), 3);
  EXPECT_EQ(manager_->GetJob(job.id())->total_steps(), 100);

  ftune::v1::ReportEventsRequest ckpt;
  ckpt.set_job_id(job.id());
  ckpt.set_lease_id(lease->lease_id());
  ckpt.set_worker_id(lease->job().worker_id());
  ckpt.set_batch_id(2);
  auto* saved = ckpt.add_events()->mutable_checkpoint_saved();
  saved->set_path("/out/job/checkpoint-10");
  saved->set_is_best(true);
  saved->set_metric_name("accuracy");
  saved->set_metric_value(0.75);
  ckpt.add_events()->mutable_eval_result()->set_accuracy(0.75);
  ASSERT_TRUE(manager_->ReportEvents(ckpt).ok());
  ftune::v1::Job running = *manager_->GetJob(job.id());
  EXPECT_EQ(running.last_checkpoint(), "/out/job/checkpoint-10");
  EXPECT_EQ(running.best_checkpoint(), "/out/job/best");
  EXPECT_DOUBLE_EQ(running.last_accuracy(), 0.75);
  EXPECT_DOUBLE_EQ(running.best_metric(), 0.75);

  auto done = Complete(*lease, ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->job().state(), ftune::v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(done->job().has_end_time());

  const auto events = AllEvents(job.id());
  ASSERT_EQ(events.size(), 9u);  // queued, assigned, running, 3 progress, ckpt, eval, succeeded
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
  EXPECT_EQ(events.back().state_changed().to(), ftune::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(manager_->GetJob(job.id())->last_event_seq(), 9);
}

TEST_F(JobManagerTest, RepeatedBatchIsAcknowledgedNotStored) {
  Register("w1");
  Submit(ValidSpec());
  auto lease = Acquire("w1");
  ASSERT_TRUE(lease.has_value());
  auto first = Report(*lease, 1, 2);
  auto again = Report(*lease, 1, 2);
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(first->last_seq(), again->last_seq());
  EXPECT_EQ(AllEvents(lease->job().id()).size(), 5u);  // queued, assigned, running, 2 progress
}

TEST_F(JobManagerTest, WorkerCannotForgeStateChanges) {
  Register("w1");
  Submit(ValidSpec());
  auto lease = Acquire("w1");
  ftune::v1::ReportEventsRequest request;
  request.set_job_id(lease->job().id());
  request.set_lease_id(lease->lease_id());
  request.set_worker_id(lease->job().worker_id());
  request.add_events()->mutable_state_changed()->set_to(ftune::v1::JOB_STATE_SUCCEEDED);
  auto result = manager_->ReportEvents(request);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "events[0]"));
}

TEST_F(JobManagerTest, PriorityThenFifo) {
  Register("w1");
  const auto low1 = Submit(ValidSpec("low1"));
  auto high_spec = ValidSpec("high");
  high_spec.set_priority(5);
  const auto low2 = Submit(ValidSpec("low2"));
  const auto high = Submit(high_spec);
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto lease = Acquire("w1");
    ASSERT_TRUE(lease.has_value());
    order.push_back(lease->job().id());
    ASSERT_TRUE(Complete(*lease, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  }
  EXPECT_EQ(order, (std::vector<std::string>{high.id(), low1.id(), low2.id()}));
  EXPECT_FALSE(Acquire("w1").has_value());
}

TEST_F(JobManagerTest, DeviceMatchingAndOneJobPerDevice) {
  Register("cpu-box", {"cpu"});
  Register("gpu-box", {"cpu", "cuda:0", "cuda:1"});
  auto cuda1 = ValidSpec("cuda1");
  cuda1.set_device("cuda:1");
  auto any_cuda = ValidSpec("anycuda");
  any_cuda.set_device("cuda");
  const auto j1 = Submit(cuda1);
  const auto j2 = Submit(any_cuda);

  // A CPU-only box takes neither.
  EXPECT_FALSE(Acquire("cpu-box").has_value());
  // The GPU box offering only cuda:0 gets the "cuda" job, not the cuda:1 one.
  auto lease = Acquire("gpu-box", {"cuda:0"});
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job().id(), j2.id());
  EXPECT_EQ(lease->device(), "cuda:0");
  // cuda:0 is busy now even if the worker claims it is free.
  EXPECT_FALSE(Acquire("gpu-box", {"cuda:0"}).has_value());
  auto lease1 = Acquire("gpu-box", {"cuda:0", "cuda:1"});
  ASSERT_TRUE(lease1.has_value());
  EXPECT_EQ(lease1->job().id(), j1.id());
  EXPECT_EQ(lease1->device(), "cuda:1");

  // auto prefers a free CUDA device; cpu fits any.
  const auto a = Submit(ValidSpec("auto"));
  auto lease2 = Acquire("gpu-box", {"cpu", "cuda:0", "cuda:1"});
  ASSERT_TRUE(lease2.has_value());
  EXPECT_EQ(lease2->job().id(), a.id());
  EXPECT_EQ(lease2->device(), "cpu");  // both cuda devices are leased
  auto c = ValidSpec("cpu");
  c.set_device("cpu");
  Submit(c);
  EXPECT_FALSE(Acquire("gpu-box", {"cpu"}).has_value());  // cpu busy
  auto lease3 = Acquire("cpu-box");
  ASSERT_TRUE(lease3.has_value());
  EXPECT_EQ(lease3->device(), "cpu");
}

TEST_F(JobManagerTest, UnknownDeviceAndUnregisteredWorkerAreErrors) {
  Register("w1");
  ftune::v1::AcquireJobRequest request;
  request.set_worker_id("w1");
  request.add_free_devices("cuda:7");
  absl::Status seen;
  manager_->AcquireJob(request, [&](auto r) { seen = r.status(); });
  EXPECT_EQ(seen.code(), absl::StatusCode::kInvalidArgument);
  request.set_worker_id("nobody");
  manager_->AcquireJob(request, [&](auto r) { seen = r.status(); });
  EXPECT_EQ(seen.code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, LongPollIsAnsweredBySubmitOrByTheDeadline) {
  Register("w1");
  ftune::v1::AcquireJobRequest request;
  request.set_worker_id("w1");
  request.add_free_devices("cpu");
  request.set_wait_seconds(20);
  int calls = 0;
  std::string got;
  manager_->AcquireJob(request, [&](absl::StatusOr<ftune::v1::AcquireJobResponse> r) {
    ++calls;
    ASSERT_TRUE(r.ok());
    got = r->job().id();
  });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(manager_->waiting_acquires(), 1u);
  const auto job = Submit(ValidSpec());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got, job.id());

  // Nothing queued: the sweep after the deadline answers with no job.
  manager_->AcquireJob(request, [&](absl::StatusOr<ftune::v1::AcquireJobResponse> r) {
    ++calls;
    ASSERT_TRUE(r.ok());
    got = r->has_job() ? r->job().id() : "";
  });
  clock_.Advance(absl::Seconds(19));
  manager_->Sweep();
  EXPECT_EQ(calls, 1);
  clock_.Advance(absl::Seconds(2));
  manager_->Sweep();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(got, "");

  // A withdrawn poll is never answered.
  const uint64_t id = manager_->AcquireJob(request, [&](auto) { ++calls; });
  EXPECT_TRUE(manager_->CancelAcquire(id));
  Submit(ValidSpec("later"));
  EXPECT_EQ(calls, 2);
}

TEST_F(JobManagerTest, HeartbeatsKeepTheLeaseAndExpiryRequeuesWithAttempt) {
  Register("w1");
  Register("w2");
  const auto job = Submit(ValidSpec());
  auto lease = Acquire("w1");
  ASSERT_TRUE(Report(*lease, 1, 1).ok());
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(absl::Seconds(20));
    EXPECT_EQ(Beat("w1", *lease), ftune::v1::LEASE_VERDICT_OK);
    EXPECT_EQ(manager_->Sweep(), 0);
  }
  clock_.Advance(absl::Seconds(31));
  EXPECT_EQ(manager_->Sweep(), 1);
  ftune::v1::Job requeued = *manager_->GetJob(job.id());
  EXPECT_EQ(requeued.state(), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.attempt(), 1u);
  // The old worker learns it lost the job, and cannot report or complete.
  EXPECT_EQ(Beat("w1", *lease), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(Report(*lease, 2, 1)->verdict(), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(Complete(*lease, ftune::v1::JOB_OUTCOME_SUCCEEDED).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Another worker resumes it.
  auto second = Acquire("w2");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->job().id(), job.id());
  EXPECT_EQ(second->job().attempt(), 1u);
  EXPECT_NE(second->lease_id(), lease->lease_id());
}

TEST_F(JobManagerTest, ExpiryBeyondMaxRestartsFails) {
  Register("w1");
  auto spec = ValidSpec();
  spec.set_max_restarts(1);
  const auto job = Submit(spec);
  for (int run = 0; run < 2; ++run) {
    ASSERT_TRUE(Acquire("w1").has_value());
    clock_.Advance(absl::Seconds(31));
    EXPECT_EQ(manager_->Sweep(), 1);
  }
  ftune::v1::Job failed = *manager_->GetJob(job.id());
  EXPECT_EQ(failed.state(), ftune::v1::JOB_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(failed.error(), "max_restarts")) << failed.error();
}

TEST_F(JobManagerTest, HandBackDoesNotCountAsRestart) {
  Register("w1");
  auto spec = ValidSpec();
  spec.set_max_restarts(0);
  const auto job = Submit(spec);
  for (int i = 0; i < 3; ++i) {
    auto lease = Acquire("w1");
    ASSERT_TRUE(lease.has_value());
    auto back = Complete(*lease, ftune::v1::JOB_OUTCOME_REQUEUE);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->job().state(), ftune::v1::JOB_STATE_QUEUED);
    EXPECT_EQ(back->job().attempt(), static_cast<uint32_t>(i + 1));
  }
  // A crash with max_restarts 0 then fails at once.
  ASSERT_TRUE(Acquire("w1").has_value());
  clock_.Advance(absl::Seconds(31));
  manager_->Sweep();
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_FAILED);
}

// Each case starts from an empty controller with one worker, w1, and drives a job into a
// state.
class TransitionTableTest : public JobManagerTest {
 protected:
  struct Driven {
    std::string id;
    std::optional<ftune::v1::AcquireJobResponse> lease;
  };
  Driven DriveTo(JobState state, uint32_t max_restarts) {
    store_ = std::make_unique<MemoryJobStore>();
    Reopen();
    Register("w1");
    auto spec = ValidSpec();
    spec.set_max_restarts(max_restarts);
    Driven d;
    d.id = Submit(spec).id();
    if (state == ftune::v1::JOB_STATE_QUEUED) return d;
    d.lease = Acquire("w1");
    EXPECT_TRUE(d.lease.has_value());
    if (state == ftune::v1::JOB_STATE_RUNNING) {
      EXPECT_TRUE(Report(*d.lease, 1, 1).ok());
    }
    if (state == ftune::v1::JOB_STATE_CANCELLING) {
      EXPECT_TRUE(manager_->CancelJob(d.id, "").ok());
    }
    EXPECT_EQ(StateOf(d.id), state);
    return d;
  }
  // Applies `trigger` the way its caller would; the job's state afterwards.
  JobState Apply(const Driven& d, JobTrigger trigger) {
    auto outcome = [&](ftune::v1::JobOutcome o) {
      if (d.lease) (void)Complete(*d.lease, o, "boom");  // without a lease there is no call
    };
    switch (trigger) {
      case JobTrigger::kLease:
        (void)Acquire("w1");
        break;
      case JobTrigger::kStart:
        if (d.lease) (void)Report(*d.lease, 7, 1);
        break;
      case JobTrigger::kCancel:
        (void)manager_->CancelJob(d.id, "");
        break;
      case JobTrigger::kSucceeded:
        outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
        break;
      case JobTrigger::kFailed:
        outcome(ftune::v1::JOB_OUTCOME_FAILED);
        break;
      case JobTrigger::kCancelled:
        outcome(ftune::v1::JOB_OUTCOME_CANCELLED);
        break;
      case JobTrigger::kHandBack:
        outcome(ftune::v1::JOB_OUTCOME_REQUEUE);
        break;
      case JobTrigger::kRetry:
        outcome(ftune::v1::JOB_OUTCOME_RETRY);
        break;
      case JobTrigger::kLeaseExpired:
        clock_.Advance(absl::Seconds(31));
        manager_->Sweep();
        break;
    }
    return StateOf(d.id);
  }
};

// Every row of the lifecycle table happens as written, counted restarts fail the job once
// max_restarts is used up, and a trigger the table does not list for a state changes nothing.
TEST_F(TransitionTableTest, EveryTransitionOfTheTableAndNothingElse) {
  const std::vector<JobState> live = {ftune::v1::JOB_STATE_QUEUED, ftune::v1::JOB_STATE_ASSIGNED,
                                      ftune::v1::JOB_STATE_RUNNING,
                                      ftune::v1::JOB_STATE_CANCELLING};
  const std::vector<JobTrigger> triggers = {
      JobTrigger::kLease,  JobTrigger::kStart,     JobTrigger::kCancel,
      JobTrigger::kSucceeded, JobTrigger::kFailed, JobTrigger::kCancelled,
      JobTrigger::kHandBack,  JobTrigger::kRetry,  JobTrigger::kLeaseExpired};
  int rows = 0;
  for (JobState from : live) {
    for (JobTrigger trigger : triggers) {
      SCOPED_TRACE(absl::StrCat(ftune::v1::JobState_Name(from), " + ", JobTriggerName(trigger)));
      const std::optional<JobTransition> t = FindTransition(from, trigger);
      Driven d = DriveTo(from, /*max_restarts=*/1);
      const JobState after = Apply(d, trigger);
      if (!t) {
        // CancelJob on a cancelling job is a no-op by design; nothing else moves either.
        EXPECT_EQ(after, from);
        continue;
      }
      ++rows;
      EXPECT_EQ(after, t->to);
      const ftune::v1::Job job = *manager_->GetJob(d.id);
      if (t->to == ftune::v1::JOB_STATE_QUEUED) {
        EXPECT_EQ(job.attempt(), 1u);
      }
      // The events say what happened, gaplessly.
      const auto events = AllEvents(d.id);
      JobState last = ftune::v1::JOB_STATE_UNSPECIFIED;
      for (size_t i = 0; i < events.size(); ++i) {
        EXPECT_EQ(events[i].seq(), int64_t(i) + 1);
        if (events[i].has_state_changed()) last = events[i].state_changed().to();
      }
      EXPECT_EQ(last, t->to);
      if (t->counts_as_restart) {
        // The same trigger with no restarts left fails the job instead.
        Driven exhausted = DriveTo(from, /*max_restarts=*/0);
        EXPECT_EQ(Apply(exhausted, trigger), ftune::v1::JOB_STATE_FAILED);
        EXPECT_TRUE(absl::StrContains(manager_->GetJob(exhausted.id)->error(), "max_restarts"));
      }
    }
  }
  EXPECT_EQ(rows, static_cast<int>(JobTransitions().size()));
}

// An error a worker reports as transient queues the job again after an exponential backoff,
// counted against max_restarts; the worker's own shutdown is not counted and not delayed.
TEST_F(JobManagerTest, RetriesBackOffAndAreBounded) {
  Reopen(/*retry_backoff=*/absl::Seconds(5));
  Register("w1");
  auto spec = ValidSpec();
  spec.set_max_restarts(2);
  const auto job = Submit(spec);
  absl::Duration backoff = absl::Seconds(5);
  for (uint32_t restart = 1; restart <= 2; ++restart) {
    SCOPED_TRACE(restart);
    auto lease = Acquire("w1");
    ASSERT_TRUE(lease.has_value());
    auto retried = Complete(*lease, ftune::v1::JOB_OUTCOME_RETRY, "RESOURCE_EXHAUSTED: oom");
    ASSERT_TRUE(retried.ok()) << retried.status();
    EXPECT_EQ(retried->job().state(), ftune::v1::JOB_STATE_QUEUED);
    EXPECT_EQ(retried->job().attempt(), restart);
    // Not before the backoff is over; then the sweeper offers it again.
    EXPECT_FALSE(Acquire("w1").has_value());
    clock_.Advance(backoff - absl::Seconds(1));
    manager_->Sweep();
    EXPECT_FALSE(Acquire("w1").has_value());
    clock_.Advance(absl::Seconds(1));
    backoff *= 2;
  }
  const auto events = AllEvents(job.id());
  EXPECT_TRUE(absl::StrContains(events.back().state_changed().reason(), "restart 2 of 2 in 10s"))
      << events.back().state_changed().reason();
  EXPECT_TRUE(absl::StrContains(events.back().state_changed().reason(), "oom"));
  auto last = Acquire("w1");
  ASSERT_TRUE(last.has_value());
  auto failed = Complete(*last, ftune::v1::JOB_OUTCOME_RETRY, "UNAVAILABLE: disk");
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->job().state(), ftune::v1::JOB_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(failed->job().error(), "max_restarts (2) is used up"))
      << failed->job().error();

  // A hand-back is neither counted nor delayed.
  auto other = ValidSpec("handed");
  other.set_max_restarts(0);
  const auto handed = Submit(other);
  auto lease = Acquire("w1");
  ASSERT_TRUE(lease.has_value());
  auto back = Complete(*lease, ftune::v1::JOB_OUTCOME_REQUEUE);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->job().state(), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(absl::StrContains(AllEvents(handed.id()).back().state_changed().reason(),
                                "not counted against max_restarts"));
  EXPECT_TRUE(Acquire("w1").has_value());
}

// Only the worker holding the current lease may report or complete: another worker with the
// right lease id (leaked, guessed) is refused and stores nothing.
TEST_F(JobManagerTest, ReportsFromAnotherWorkerAreRefused) {
  Register("w1");
  Register("w2");
  const auto job = Submit(ValidSpec());
  auto lease = Acquire("w1");
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->lease_id().size(), std::string("lease-").size() + 32);
  ftune::v1::ReportEventsRequest report;
  report.set_job_id(job.id());
  report.set_lease_id(lease->lease_id());
  report.set_worker_id("w2");
  report.add_events()->mutable_train_progress()->set_step(1);
  auto reported = manager_->ReportEvents(report);
  ASSERT_TRUE(reported.ok());
  EXPECT_EQ(reported->verdict(), ftune::v1::LEASE_VERDICT_LOST);
  EXPECT_EQ(manager_->GetJob(job.id())->last_event_seq(), AllEvents(job.id()).back().seq());
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_ASSIGNED);  // nothing started
  ftune::v1::CompleteJobRequest complete;
  complete.set_job_id(job.id());
  complete.set_lease_id(lease->lease_id());
  complete.set_worker_id("w2");
  complete.set_outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
  EXPECT_EQ(manager_->CompleteJob(complete).status().code(),
            absl::StatusCode::kFailedPrecondition);
  complete.clear_worker_id();
  EXPECT_EQ(manager_->CompleteJob(complete).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_ASSIGNED);
}

TEST_F(JobManagerTest, FailedOutcomeIsFinal) {
  Register("w1");
  const auto job = Submit(ValidSpec());
  auto lease = Acquire("w1");
  ftune::v1::CompleteJobRequest request;
  request.set_job_id(job.id());
  request.set_lease_id(lease->lease_id());
  request.set_worker_id(lease->job().worker_id());
  request.set_outcome(ftune::v1::JOB_OUTCOME_FAILED);
  request.set_error("dataset.path: /data/ravdess does not exist");
  auto done = manager_->CompleteJob(request);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->job().state(), ftune::v1::JOB_STATE_FAILED);
  EXPECT_EQ(done->job().error(), "dataset.path: /data/ravdess does not exist");
  EXPECT_FALSE(Acquire("w1").has_value());
  // Retrying the same CompleteJob is harmless.
  auto retry = manager_->CompleteJob(request);
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->job().last_event_seq(), done->job().last_event_seq());
}

TEST_F(JobManagerTest, CancelQueuedIsImmediate) {
  const auto job = Submit(ValidSpec());
  auto cancelled = manager_->CancelJob(job.id(), "");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), ftune::v1::JOB_STATE_CANCELLED);
  Register("w1");
  EXPECT_FALSE(Acquire("w1").has_value());
}

TEST_F(JobManagerTest, CancelAssignedAndRunningGoThroughCancelling) {
  Register("w1", {"cpu", "cuda:0"});
  const auto a = Submit(ValidSpec("assigned"));
  const auto r = Submit(ValidSpec("running"));
  auto lease_a = Acquire("w1", {"cpu"});
  auto lease_r = Acquire("w1", {"cuda:0"});
  ASSERT_TRUE(lease_a && lease_r);
  ASSERT_TRUE(Report(*lease_r, 1, 1).ok());

  for (const auto* lease : {&*lease_a, &*lease_r}) {
    auto cancelling = manager_->CancelJob(lease->job().id(), "changed my mind");
    ASSERT_TRUE(cancelling.ok());
    EXPECT_EQ(cancelling->state(), ftune::v1::JOB_STATE_CANCELLING);
    EXPECT_EQ(Beat("w1", *lease), ftune::v1::LEASE_VERDICT_CANCEL);
    // Cancelling twice changes nothing.
    EXPECT_EQ(manager_->CancelJob(lease->job().id(), "")->last_event_seq(),
              cancelling->last_event_seq());
  }
  EXPECT_EQ(Report(*lease_r, 2, 1)->verdict(), ftune::v1::LEASE_VERDICT_CANCEL);
  auto done = Complete(*lease_r, ftune::v1::JOB_OUTCOME_CANCELLED);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->job().state(), ftune::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(done->job().error(), "changed my mind");
  // A hand-back of a cancelling job ends it too.
  auto handed = Complete(*lease_a, ftune::v1::JOB_OUTCOME_REQUEUE);
  ASSERT_TRUE(handed.ok());
  EXPECT_EQ(handed->job().state(), ftune::v1::JOB_STATE_CANCELLED);
}

TEST_F(JobManagerTest, CancellingJobWhoseWorkerVanishesIsCancelled) {
  Register("w1");
  const auto job = Submit(ValidSpec());
  ASSERT_TRUE(Acquire("w1").has_value());
  ASSERT_TRUE(manager_->CancelJob(job.id(), "").ok());
  clock_.Advance(absl::Seconds(31));
  EXPECT_EQ(manager_->Sweep(), 1);
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_CANCELLED);
}

TEST_F(JobManagerTest, CancelEndedJobOrUnknownJob) {
  Register("w1");
  const auto job = Submit(ValidSpec());
  auto lease = Acquire("w1");
  ASSERT_TRUE(Complete(*lease, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  EXPECT_EQ(manager_->CancelJob(job.id(), "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->CancelJob("job-nope", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->CancelJob("", "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, SubmitIsIdempotentByClientRequestId) {
  auto spec = ValidSpec();
  spec.set_client_request_id("req-1");
  auto first = manager_->SubmitJob(spec);
  auto second = manager_->SubmitJob(spec);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(second->created);
  EXPECT_EQ(first->job.id(), second->job.id());
  EXPECT_EQ(manager_->ListJobs({})->jobs_size(), 1);
  // Also after a restart.
  Reopen();
  auto third = manager_->SubmitJob(spec);
  ASSERT_TRUE(third.ok());
  EXPECT_FALSE(third->created);
  EXPECT_EQ(third->job.id(), first->job.id());
}

TEST_F(JobManagerTest, BadSpecsNameTheField) {
  struct Case {
    std::function<void(ftune::v1::JobSpec*)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](auto* s) { s->mutable_dataset()->clear_path(); }, "dataset.path"},
      {[](auto* s) { s->clear_model(); }, "model"},
      {[](auto* s) { s->clear_output_dir(); }, "output_dir"},
      {[](auto* s) { s->mutable_training()->set_batch_size(5000); }, "training.batch_size"},
      {[](auto* s) { s->mutable_training()->set_learning_rate(-1); }, "training.learning_rate"},
      {[](auto* s) { s->mutable_training()->set_warmup_ratio(1.5); }, "training.warmup_ratio"},
      {[](auto* s) { s->mutable_training()->set_metric_for_best("bleu"); },
       "training.metric_for_best"},
      {[](auto* s) { s->mutable_dataset()->set_eval_fraction(1.0); }, "dataset.eval_fraction"},
      {[](auto* s) { s->set_device("tpu"); }, "device"},
      {[](auto* s) { s->set_device("cuda:x"); }, "device"},
      {[](auto* s) {
         s->add_labels("a");
         s->add_labels("a");
       },
       "labels[1]"},
      {[](auto* s) { s->set_max_restarts(1000); }, "max_restarts"},
      // A crop shorter than one frame of the model.
      {[](auto* s) { s->mutable_training()->set_max_seconds(0.01); }, "training.max_seconds"},
  };
  for (const Case& c : cases) {
    auto spec = ValidSpec();
    c.mutate(&spec);
    auto result = manager_->SubmitJob(spec);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_TRUE(absl::StartsWith(result.status().message(), c.field + ":"))
        << c.field << " vs " << result.status().message();
  }
  EXPECT_EQ(manager_->ListJobs({})->jobs_size(), 0);
}

TEST_F(JobManagerTest, ListJobsFiltersAndPagesNewestFirst) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(Submit(ValidSpec(absl::StrCat("j", i))).id());
  ASSERT_TRUE(manager_->CancelJob(ids[2], "").ok());
  ASSERT_TRUE(manager_->CancelJob(ids[5], "").ok());

  ftune::v1::ListJobsRequest request;
  request.set_page_size(3);
  std::vector<std::string> seen;
  for (int page = 0; page < 10; ++page) {
    auto response = manager_->ListJobs(request);
    ASSERT_TRUE(response.ok());
    for (const auto& job : response->jobs()) seen.push_back(job.id());
    if (response->next_page_token().empty()) break;
    request.set_page_token(response->next_page_token());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{ids[6], ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}));

  ftune::v1::ListJobsRequest cancelled;
  cancelled.add_states(ftune::v1::JOB_STATE_CANCELLED);
  cancelled.set_page_size(1);
  auto page1 = manager_->ListJobs(cancelled);
  ASSERT_EQ(page1->jobs_size(), 1);
  EXPECT_EQ(page1->jobs(0).id(), ids[5]);
  cancelled.set_page_token(page1->next_page_token());
  auto page2 = manager_->ListJobs(cancelled);
  ASSERT_EQ(page2->jobs_size(), 1);
  EXPECT_EQ(page2->jobs(0).id(), ids[2]);
  EXPECT_TRUE(page2->next_page_token().empty());

  cancelled.set_page_token("garbage");
  EXPECT_EQ(manager_->ListJobs(cancelled).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, RestartKeepsJobsEventsAndRearmsLeases) {
  Register("w1");
  const auto job = Submit(ValidSpec());
  auto lease = Acquire("w1");
  ASSERT_TRUE(Report(*lease, 1, 2).ok());
  const auto before = AllEvents(job.id());
  clock_.Advance(absl::Seconds(25));  // lease nearly out when the controller "dies"

  Reopen();
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_RUNNING);
  const auto after = AllEvents(job.id());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].SerializeAsString(), before[i].SerializeAsString());
  }
  // The lease was re-armed from the restart: 25 s later it still holds.
  clock_.Advance(absl::Seconds(25));
  EXPECT_EQ(manager_->Sweep(), 0);
  EXPECT_EQ(Beat("w1", *lease), ftune::v1::LEASE_VERDICT_OK);
  ASSERT_TRUE(Report(*lease, 2, 1).ok());
  auto done = Complete(*lease, ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->job().last_event_seq(), static_cast<int64_t>(before.size()) + 2);
  // Workers are known across the restart (no re-register demanded).
  ftune::v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  EXPECT_FALSE(manager_->Heartbeat(hb)->reregister());
  hb.set_worker_id("stranger");
  EXPECT_TRUE(manager_->Heartbeat(hb)->reregister());
}

// A failed commit is never acknowledged; the manager stops rather than answer from memory
// that the disk does not hold, and a restart carries on from what was acknowledged.
TEST_F(JobManagerTest, FailedCommitStopsTheManagerAndARestartResumes) {
  Register("w1");
  const auto job = Submit(ValidSpec());
  int notified = 0;
  auto watch = manager_->WatchJob(job.id(), 0, [&] { ++notified; });
  ASSERT_TRUE(watch.ok());
  store_->set_fail_commits(true);
  const auto lost = manager_->SubmitJob(ValidSpec("x"));
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(lost.status().message(), "commits refused")) << lost.status();
  // Everything after it fails too, reads and heartbeats included.
  EXPECT_EQ(manager_->CancelJob(job.id(), "").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(manager_->ListJobs({}).status().code(), absl::StatusCode::kUnavailable);
  ftune::v1::HeartbeatRequest beat;
  beat.set_worker_id("w1");
  EXPECT_EQ(manager_->Heartbeat(beat).status().code(), absl::StatusCode::kUnavailable);
  // Watchers are told, with where to resume.
  testing::Drained drained;
  testing::DrainInto(**watch, &drained);
  ASSERT_TRUE(drained.done);
  EXPECT_EQ(drained.status.code(), absl::StatusCode::kUnavailable) << drained.status;
  EXPECT_GT(notified, 0);

  store_->set_fail_commits(false);
  Reopen();
  auto listed = manager_->ListJobs({});
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).id(), job.id());
  EXPECT_EQ(StateOf(job.id()), ftune::v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(Acquire("w1").has_value());
}

// Once its end is durable, an ended job leaves memory (at the next sweep); every call still
// answers for it from the store, across a restart too.
TEST_F(JobManagerTest, EndedJobsLeaveMemoryAndAreServedFromTheStore) {
  Register("w1");
  auto once = ValidSpec("a");
  once.set_client_request_id("once");
  const auto a = Submit(once);
  const auto b = Submit(ValidSpec("b"));
  ASSERT_TRUE(manager_->CancelJob(a.id(), "not needed").ok());
  EXPECT_EQ(manager_->jobs_in_memory(), 2u);
  manager_->Sweep();
  EXPECT_EQ(manager_->jobs_in_memory(), 1u);

  for (int restart = 0; restart < 2; ++restart) {
    SCOPED_TRACE(restart ? "after a restart" : "before a restart");
    EXPECT_EQ(manager_->jobs_in_memory(), 1u);
    EXPECT_EQ(StateOf(a.id()), ftune::v1::JOB_STATE_CANCELLED);
    auto all = manager_->ListJobs({});
    ASSERT_TRUE(all.ok()) << all.status();
    ASSERT_EQ(all->jobs_size(), 2);
    EXPECT_EQ(all->jobs(0).id(), b.id());  // newest first
    EXPECT_EQ(all->jobs(1).id(), a.id());
    ftune::v1::ListJobsRequest paged;
    paged.set_page_size(1);
    auto first = manager_->ListJobs(paged);
    ASSERT_EQ(first->jobs_size(), 1);
    EXPECT_EQ(first->jobs(0).id(), b.id());
    paged.set_page_token(first->next_page_token());
    auto second = manager_->ListJobs(paged);
    ASSERT_EQ(second->jobs_size(), 1);
    EXPECT_EQ(second->jobs(0).id(), a.id());
    EXPECT_TRUE(second->next_page_token().empty());
    ftune::v1::ListJobsRequest cancelled;
    cancelled.add_states(ftune::v1::JOB_STATE_CANCELLED);
    ASSERT_EQ(manager_->ListJobs(cancelled)->jobs_size(), 1);

    const auto events = AllEvents(a.id());
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[1].state_changed().to(), ftune::v1::JOB_STATE_CANCELLED);
    const auto again = manager_->CancelJob(a.id(), "");
    EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(again.status().message(), "CANCELLED")) << again.status();
    // A repeated submit finds the ended job.
    auto repeated = manager_->SubmitJob(once);
    ASSERT_TRUE(repeated.ok());
    EXPECT_FALSE(repeated->created);
    EXPECT_EQ(repeated->job.id(), a.id());
    auto by_state = manager_->JobsByState();
    EXPECT_EQ(by_state[ftune::v1::JOB_STATE_CANCELLED], 1);
    EXPECT_EQ(by_state[ftune::v1::JOB_STATE_QUEUED], 1);
    Reopen();
  }
}

TEST_F(JobManagerTest, EventRetentionDropsProgressOfJobsEndedLongAgo) {
  Reopen(absl::ZeroDuration(), absl::Hours(24));
  Register("w1");
  const auto ended = Submit(ValidSpec("ended"));
  auto lease = Acquire("w1");
  ASSERT_TRUE(lease.has_value());
  ASSERT_TRUE(Report(*lease, 1, 5).ok());
  ASSERT_TRUE(Complete(*lease, ftune::v1::JOB_OUTCOME_SUCCEEDED).ok());
  const auto running = Submit(ValidSpec("running"));
  auto second = Acquire("w1");
  ASSERT_TRUE(Report(*second, 1, 3).ok());
  const size_t before = AllEvents(ended.id()).size();  // queued, assigned, running, 5, done

  clock_.Advance(absl::Hours(23));
  EXPECT_EQ(*manager_->CompactEvents(), 0);  // not old enough yet
  clock_.Advance(absl::Hours(2));
  EXPECT_EQ(*manager_->CompactEvents(), 5);
  const auto kept = AllEvents(ended.id());
  EXPECT_EQ(kept.size(), before - 5);
  for (const auto& e : kept) EXPECT_TRUE(e.has_state_changed()) << e.DebugString();
  EXPECT_EQ(kept.back().seq(), static_cast<int64_t>(before));  // seqs stay; the gap is skipped
  EXPECT_EQ(AllEvents(running.id()).size(), 3u + 3u);          // a live job keeps everything
  EXPECT_EQ(StateOf(ended.id()), ftune::v1::JOB_STATE_SUCCEEDED);
}

// A store whose commits wait at a gate, to see what queues up meanwhile.
class GatedStore final : public ForwardingJobStore {
 public:
  GatedStore() : ForwardingJobStore(&inner_) {}

  absl::Status Commit(const StoreBatch& batch) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    --waiting_;
    batch_sizes_.push_back(batch.jobs.size());
    return inner_.Commit(batch);
  }

  void WaitForBlockedCommit() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return waiting_ > 0; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  std::vector<size_t> batch_sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return batch_sizes_;
  }

 private:
  MemoryJobStore inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
  std::vector<size_t> batch_sizes_;
};

// Changes made while a commit is in flight go into the next one together, none is answered
// before it is stored, and heartbeats are answered meanwhile.
TEST(GroupCommitTest, ChangesQueuedDuringACommitShareTheNextOne) {
  GatedStore store;
  FakeClock clock;
  auto manager = JobManager::Create(&store, &clock, JobManagerOptions());
  ASSERT_TRUE(manager.ok());
  JobManager& m = **manager;
  std::atomic<int> answered{0};
  std::thread first([&] {
    ASSERT_TRUE(m.SubmitJob(ValidSpec("first")).ok());
    answered.fetch_add(1);
  });
  store.WaitForBlockedCommit();
  constexpr int kMore = 10;
  std::vector<std::thread> more;
  for (int i = 0; i < kMore; ++i) {
    more.emplace_back([&, i] {
      ASSERT_TRUE(m.SubmitJob(ValidSpec(absl::StrCat("more", i))).ok());
      answered.fetch_add(1);
    });
  }
  while (m.queued_writes() < static_cast<size_t>(kMore)) std::this_thread::yield();
  // A heartbeat is answered from memory while the commit hangs.
  ftune::v1::HeartbeatRequest beat;
  beat.set_worker_id("w1");
  auto heard = m.Heartbeat(beat);
  ASSERT_TRUE(heard.ok()) << heard.status();
  EXPECT_TRUE(heard->reregister());
  EXPECT_EQ(answered.load(), 0);  // nothing acknowledged before it is stored
  store.Open();
  first.join();
  for (auto& t : more) t.join();
  EXPECT_EQ(answered.load(), 1 + kMore);
  EXPECT_EQ(store.batch_sizes(), (std::vector<size_t>{1, kMore}));
  EXPECT_EQ(m.ListJobs({})->jobs_size(), 1 + kMore);
}

TEST_F(JobManagerTest, ListWorkersShowsLeasesAndOffline) {
  Register("w1");
  const auto job = Submit(ValidSpec());
  ASSERT_TRUE(Acquire("w1").has_value());
  auto workers = manager_->ListWorkers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].state(), ftune::v1::WORKER_STATE_ONLINE);
  ASSERT_EQ(workers[0].job_ids_size(), 1);
  EXPECT_EQ(workers[0].job_ids(0), job.id());
  clock_.Advance(absl::Seconds(31));
  manager_->Sweep();
  workers = manager_->ListWorkers();
  EXPECT_EQ(workers[0].state(), ftune::v1::WORKER_STATE_OFFLINE);
  EXPECT_EQ(workers[0].job_ids_size(), 0);
}

// What the metrics read: submits, leases, expiries and both kinds of requeue, events by
// kind, jobs by state.
TEST_F(JobManagerTest, CountersFollowTheLifecycle) {
  Register("w1");
  auto spec = ValidSpec();
  spec.set_client_request_id("once");
  const auto job = Submit(spec);
  Submit(spec);  // idempotent repeat: no new job
  Submit(ValidSpec("second"));
  auto lease = Acquire("w1");
  ASSERT_TRUE(lease.has_value());
  ASSERT_TRUE(Report(*lease, 1, 2).ok());
  clock_.Advance(absl::Seconds(31));
  EXPECT_EQ(manager_->Sweep(), 1);  // w1 went silent
  Register("w1");
  auto again = Acquire("w1");
  ASSERT_TRUE(again.has_value());
  ASSERT_TRUE(Complete(*again, ftune::v1::JOB_OUTCOME_REQUEUE).ok());

  const JobManagerCounters counters = manager_->counters();
  EXPECT_EQ(counters.submitted, 2u);
  EXPECT_EQ(counters.leases_granted, 2u);
  EXPECT_EQ(counters.leases_expired, 1u);
  EXPECT_EQ(counters.requeued_after_expiry, 1u);
  EXPECT_EQ(counters.requeued_handed_back, 1u);
  EXPECT_EQ(counters.events.at("train_progress"), 2u);
  // queued x2, assigned, running, queued (expiry), assigned, queued (hand-back).
  EXPECT_EQ(counters.events.at("state_changed"), 7u);

  const auto states = manager_->JobsByState();
  EXPECT_EQ(states.at(ftune::v1::JOB_STATE_QUEUED), 2);
  EXPECT_EQ(states.at(ftune::v1::JOB_STATE_RUNNING), 0);
  EXPECT_EQ(states.size(), 7u);  // every state, zero or not
}

}  // namespace
}  // namespace ftune::server
