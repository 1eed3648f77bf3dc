#include "worker/daemon/event_reporter.h"

#include <gtest/gtest.h>

#include "tests/daemon/fakes.h"

namespace ftune::daemon {
namespace {

namespace v1 = ::ftune::v1;

EventReporterOptions FastOptions() {
  EventReporterOptions options;
  options.max_batch = 4;
  options.linger = absl::Milliseconds(1);
  options.backoff = {absl::Milliseconds(1), absl::Milliseconds(5)};
  return options;
}

v1::JobEvent Progress(int64_t step) {
  v1::JobEvent event;
  event.mutable_train_progress()->set_step(step);
  return event;
}

TEST(EventReporterTest, SendsEverythingInOrderInNumberedBatches) {
  FakeController controller;
  train::CancelToken cancel;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, FastOptions());
  for (int i = 1; i <= 10; ++i) reporter.Emit(Progress(i));
  ASSERT_TRUE(reporter.Flush(absl::Seconds(20)).ok());

  const auto& stored = controller.stored["job-1"];
  ASSERT_EQ(stored.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(stored[i].train_progress().step(), i + 1);
    EXPECT_GT(stored[i].time().seconds(), 0) << "time is stamped";
  }
  uint64_t expected_batch = 1;
  for (const auto& report : controller.reports) {
    EXPECT_EQ(report.batch_id(), expected_batch++);
    EXPECT_EQ(report.job_id(), "job-1");
    EXPECT_EQ(report.lease_id(), "lease-1");
    EXPECT_LE(report.events_size(), 4);
  }
  EXPECT_GE(controller.reports.size(), 3u);
  EXPECT_EQ(reporter.last_seq(), 10);
}

TEST(EventReporterTest, RetriesTheSameBatchUntilAccepted) {
  FakeController controller;
  controller.FailReports(3, absl::UnavailableError("controller restarting"));
  train::CancelToken cancel;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, FastOptions());
  reporter.Emit(Progress(1));
  reporter.Emit(Progress(2));
  ASSERT_TRUE(reporter.Flush(absl::Seconds(20)).ok());

  ASSERT_GE(controller.reports.size(), 4u);
  // The failed attempts and the accepted one carry the same id and events.
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(controller.reports[i].batch_id(), controller.reports[0].batch_id());
    EXPECT_EQ(controller.reports[i].SerializeAsString(), controller.reports[0].SerializeAsString());
  }
  EXPECT_EQ(controller.stored["job-1"].size(), 2u);
  EXPECT_FALSE(cancel.stop_requested());
}

TEST(EventReporterTest, EmitDoesNotWaitForTheNetworkAndCoalescesProgress) {
  FakeController controller;
  controller.BlockReports();
  train::CancelToken cancel;
  EventReporterOptions options = FastOptions();
  options.max_queue = 8;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, options);
  reporter.Emit(Progress(0));
  // The sender is now stuck in ReportEvents; Emit must still return at once.
  ASSERT_TRUE(controller.Await([](const FakeController& c) { return !c.reports.empty(); }));
  v1::JobEvent eval;
  eval.mutable_eval_result()->set_accuracy(0.5);
  for (int i = 1; i <= 1000; ++i) {
    reporter.Emit(Progress(i));
    if (i == 500) reporter.Emit(eval);
  }
  EXPECT_GT(reporter.coalesced(), 900);
  controller.UnblockReports();
  ASSERT_TRUE(reporter.Flush(absl::Seconds(20)).ok());

  const auto& stored = controller.stored["job-1"];
  EXPECT_LE(stored.size(), 1u + 8u + 1u);
  int evals = 0;
  int64_t last_step = -1;
  for (const auto& event : stored) {
    if (event.has_eval_result()) ++evals;
    if (event.has_train_progress()) {
      EXPECT_GT(event.train_progress().step(), last_step) << "order kept";
      last_step = event.train_progress().step();
    }
  }
  EXPECT_EQ(evals, 1) << "evaluations are never coalesced away";
  EXPECT_EQ(last_step, 1000) << "the newest progress survives";
}

TEST(EventReporterTest, CancelVerdictRequestsCancel) {
  FakeController controller;
  controller.SetVerdict("job-1", v1::LEASE_VERDICT_CANCEL);
  train::CancelToken cancel;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, FastOptions());
  reporter.Emit(Progress(1));
  ASSERT_TRUE(reporter.Flush(absl::Seconds(20)).ok());
  EXPECT_EQ(cancel.reason(), train::StopReason::kCancel);
}

TEST(EventReporterTest, LostVerdictStopsDelivery) {
  FakeController controller;
  controller.SetVerdict("job-1", v1::LEASE_VERDICT_LOST);
  train::CancelToken cancel;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, FastOptions());
  reporter.Emit(Progress(1));
  EXPECT_EQ(reporter.Flush(absl::Seconds(20)).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(cancel.reason(), train::StopReason::kLeaseLost);
  const size_t sent = controller.reports.size();
  reporter.Emit(Progress(2));
  EXPECT_EQ(reporter.Flush(absl::Seconds(1)).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(controller.reports.size(), sent);
}

TEST(EventReporterTest, UnknownLeaseCountsAsLost) {
  FakeController controller;
  controller.FailReports(1, absl::FailedPreconditionError("lease lease-1 is not current"));
  train::CancelToken cancel;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, FastOptions());
  reporter.Emit(Progress(1));
  EXPECT_EQ(reporter.Flush(absl::Seconds(20)).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(cancel.reason(), train::StopReason::kLeaseLost);
}

TEST(EventReporterTest, FlushTimesOutWhileTheControllerIsDown) {
  FakeController controller;
  controller.SetDown(absl::UnavailableError("connection refused"));
  train::CancelToken cancel;
  EventReporter reporter(&controller, "worker-a", "job-1", "lease-1", &cancel, FastOptions());
  reporter.Emit(Progress(1));
  EXPECT_EQ(reporter.Flush(absl::Milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
  controller.SetDown(absl::OkStatus());
  EXPECT_TRUE(reporter.Flush(absl::Seconds(20)).ok());
  EXPECT_EQ(controller.stored["job-1"].size(), 1u);
}

}  // namespace
}  // namespace ftune::daemon
