// A real ftcontroller process, killed with SIGKILL mid-job and restarted on the same
// --data-dir: every acknowledged job and event is there, and the running job's worker carries
// on with its lease.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/credentials.h"
#include "tests/server/grpc_client.h"
#include "tests/server/test_util.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/promtool.h"

namespace ftune::server {
namespace {

using ftune::testing::BinaryPath;
using ftune::testing::ChildProcess;
using testing::Context;

class ControllerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ftune::testing::MakeTempDir("ctlproc");
    std::ofstream(dir_ + "/tokens") << "admin admin-token-xyz\n";
    std::ofstream(dir_ + "/admin.token") << "admin-token-xyz\n";
  }

  // Starts ftcontroller on `port` ("0" = any) and connects.
  void Start(const std::string& port) {
    auto child = ChildProcess::Start({BinaryPath("ftcontroller"), "--listen", "127.0.0.1:" + port,
                                      "--data-dir", dir_ + "/data", "--tokens", dir_ + "/tokens",
                                      "--lease-seconds", "60", "--heartbeat-seconds", "5",
                                      "--log-level", "warn", "--http-listen", "127.0.0.1:0"});
    ASSERT_TRUE(child.ok()) << child.status();
    child_ = std::make_unique<ChildProcess>(std::move(*child));
    auto address = child_->WaitForListening(absl::Seconds(60));
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
    auto http = child_->WaitForHttpListening(absl::Seconds(10));
    ASSERT_TRUE(http.ok()) << http.status();
    http_address_ = *http;
    ChannelOptions options;
    options.address = address_;
    options.token_file = dir_ + "/admin.token";
    auto channel = MakeChannel(options);
    ASSERT_TRUE(channel.ok());
    jobs_ = ftune::v1::JobService::NewStub(*channel);
    workers_ = ftune::v1::WorkerService::NewStub(*channel);
  }

  std::string dir_;
  std::string address_;
  std::string http_address_;
  std::unique_ptr<ChildProcess> child_;
  std::unique_ptr<ftune::v1::JobService::Stub> jobs_;
  std::unique_ptr<ftune::v1::WorkerService::Stub> workers_;
};

TEST_F(ControllerProcessTest, Sigkill_RestartKeepsJobsEventsAndLeases) {
  Start("0");
  ftune::v1::RegisterWorkerRequest reg;
  reg.set_worker_id("w1");
  reg.add_devices()->set_name("cpu");
  ftune::v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(workers_->RegisterWorker(Context().get(), reg, &registered).ok());
  EXPECT_DOUBLE_EQ(registered.lease_seconds(), 60);

  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ftune::v1::SubmitJobRequest submit;
    *submit.mutable_spec() = testing::ValidSpec(absl::StrCat("j", i));
    submit.mutable_spec()->set_client_request_id(absl::StrCat("req-", i));
    ftune::v1::SubmitJobResponse submitted;
    ASSERT_TRUE(jobs_->SubmitJob(Context().get(), submit, &submitted).ok());
    ids.push_back(submitted.job().id());
  }
  ftune::v1::AcquireJobRequest acquire;
  acquire.set_worker_id("w1");
  acquire.add_free_devices("cpu");
  ftune::v1::AcquireJobResponse lease;
  ASSERT_TRUE(workers_->AcquireJob(Context().get(), acquire, &lease).ok());
  ASSERT_EQ(lease.job().id(), ids[0]);
  for (uint64_t batch = 1; batch <= 3; ++batch) {
    ftune::v1::ReportEventsRequest report;
    report.set_job_id(ids[0]);
    report.set_lease_id(lease.lease_id());
    report.set_worker_id(lease.job().worker_id());
    report.set_batch_id(batch);
    report.add_events()->mutable_train_progress()->set_step(batch);
    ftune::v1::ReportEventsResponse reported;
    ASSERT_TRUE(workers_->ReportEvents(Context().get(), report, &reported).ok());
  }
  ftune::v1::CancelJobRequest cancel;
  cancel.set_job_id(ids[2]);
  ftune::v1::Job cancelled;
  ASSERT_TRUE(jobs_->CancelJob(Context().get(), cancel, &cancelled).ok());
  const auto before = testing::WatchFirst(jobs_.get(), ids[0], 0, 6);
  ASSERT_EQ(before.size(), 6u);  // queued, assigned, running, 3 progress

  child_->Signal(SIGKILL);
  auto code = child_->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 128 + SIGKILL);

  Start("0");
  ftune::v1::Job running;
  ftune::v1::GetJobRequest get;
  get.set_job_id(ids[0]);
  ASSERT_TRUE(jobs_->GetJob(Context().get(), get, &running).ok());
  EXPECT_EQ(running.state(), ftune::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.step(), 3);
  EXPECT_EQ(running.last_event_seq(), 6);
  get.set_job_id(ids[1]);
  ftune::v1::Job queued;
  ASSERT_TRUE(jobs_->GetJob(Context().get(), get, &queued).ok());
  EXPECT_EQ(queued.state(), ftune::v1::JOB_STATE_QUEUED);
  get.set_job_id(ids[2]);
  ftune::v1::Job still_cancelled;
  ASSERT_TRUE(jobs_->GetJob(Context().get(), get, &still_cancelled).ok());
  EXPECT_EQ(still_cancelled.state(), ftune::v1::JOB_STATE_CANCELLED);

  // Idempotency survives too.
  ftune::v1::SubmitJobRequest again;
  *again.mutable_spec() = testing::ValidSpec("j1");
  again.mutable_spec()->set_client_request_id("req-1");
  ftune::v1::SubmitJobResponse resubmitted;
  ASSERT_TRUE(jobs_->SubmitJob(Context().get(), again, &resubmitted).ok());
  EXPECT_FALSE(resubmitted.created());
  EXPECT_EQ(resubmitted.job().id(), ids[1]);

  // The worker carries on: heartbeat keeps the lease, events continue the seq, completion works.
  ftune::v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("w1");
  auto* renewal = heartbeat.add_leases();
  renewal->set_job_id(ids[0]);
  renewal->set_lease_id(lease.lease_id());
  ftune::v1::HeartbeatResponse beat;
  ASSERT_TRUE(workers_->Heartbeat(Context().get(), heartbeat, &beat).ok());
  EXPECT_FALSE(beat.reregister());
  ASSERT_EQ(beat.leases_size(), 1);
  EXPECT_EQ(beat.leases(0).verdict(), ftune::v1::LEASE_VERDICT_OK);

  ftune::v1::ReportEventsRequest retry;  // a batch the old process stored: not stored twice
  retry.set_job_id(ids[0]);
  retry.set_lease_id(lease.lease_id());
  retry.set_worker_id(lease.job().worker_id());
  retry.set_batch_id(3);
  retry.add_events()->mutable_train_progress()->set_step(3);
  ftune::v1::ReportEventsResponse retried;
  ASSERT_TRUE(workers_->ReportEvents(Context().get(), retry, &retried).ok());
  EXPECT_EQ(retried.last_seq(), 6);

  ftune::v1::CompleteJobRequest complete;
  complete.set_job_id(ids[0]);
  complete.set_lease_id(lease.lease_id());
  complete.set_worker_id(lease.job().worker_id());
  complete.set_outcome(ftune::v1::JOB_OUTCOME_SUCCEEDED);
  ftune::v1::CompleteJobResponse completed;
  ASSERT_TRUE(workers_->CompleteJob(Context().get(), complete, &completed).ok());
  EXPECT_EQ(completed.job().state(), ftune::v1::JOB_STATE_SUCCEEDED);

  const auto after = testing::WatchAll(jobs_.get(), ids[0], 0);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  ASSERT_EQ(after.events.size(), 7u);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after.events[i].SerializeAsString(), before[i].SerializeAsString());
  }
  EXPECT_EQ(after.events.back().state_changed().to(), ftune::v1::JOB_STATE_SUCCEEDED);

  // Close our connection first: an idle client channel is only polled every few seconds, and
  // the server's graceful shutdown waits for it to answer the GOAWAY.
  jobs_.reset();
  workers_.reset();
  child_->Signal(SIGTERM);
  auto exit_code = child_->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

// GET /metrics of a real ftcontroller: what it did so far, in a page promtool accepts.
TEST_F(ControllerProcessTest, MetricsOverHttpPassPromtool) {
  Start("0");
  ftune::v1::RegisterWorkerRequest reg;
  reg.set_worker_id("w1");
  reg.add_devices()->set_name("cpu");
  ftune::v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(workers_->RegisterWorker(Context().get(), reg, &registered).ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    ftune::v1::SubmitJobRequest submit;
    *submit.mutable_spec() = testing::ValidSpec(absl::StrCat("m", i));
    ftune::v1::SubmitJobResponse submitted;
    ASSERT_TRUE(jobs_->SubmitJob(Context().get(), submit, &submitted).ok());
    ids.push_back(submitted.job().id());
  }
  ftune::v1::AcquireJobRequest acquire;
  acquire.set_worker_id("w1");
  acquire.add_free_devices("cpu");
  ftune::v1::AcquireJobResponse lease;
  ASSERT_TRUE(workers_->AcquireJob(Context().get(), acquire, &lease).ok());
  ftune::v1::ReportEventsRequest report;
  report.set_job_id(lease.job().id());
  report.set_lease_id(lease.lease_id());
  report.set_worker_id("w1");
  report.set_batch_id(1);
  for (int step = 1; step <= 3; ++step)
    report.add_events()->mutable_train_progress()->set_step(step);
  ftune::v1::ReportEventsResponse reported;
  ASSERT_TRUE(workers_->ReportEvents(Context().get(), report, &reported).ok());

  auto refused = ftune::testing::HttpGet(http_address_, "/metrics");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 401) << "the same tokens as gRPC";
  auto page = ftune::testing::HttpGet(http_address_, "/metrics", "admin-token-xyz");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->status, 200) << page->body;
  const std::string& text = page->body;
  for (const char* line :
       {"ftune_controller_jobs{state=\"queued\"} 1\n",
        "ftune_controller_jobs{state=\"running\"} 1\n", "ftune_controller_jobs_submitted_total 2\n",
        "ftune_controller_leases_granted_total 1\n", "ftune_controller_leases_expired_total 0\n",
        "ftune_controller_events_total{kind=\"train_progress\"} 3\n",
        "ftune_controller_workers{state=\"online\"} 1\n", "ftune_controller_watchers 0\n"}) {
    EXPECT_TRUE(absl::StrContains(text, line)) << line << " missing from\n" << text;
  }
  EXPECT_TRUE(absl::StrContains(text, "ftune_controller_store_commit_duration_seconds_count "));
  absl::Status lint = ftune::testing::PromtoolCheckMetrics(text);
  EXPECT_TRUE(lint.ok()) << lint;

  jobs_.reset();
  workers_.reset();
  child_->Signal(SIGTERM);
  auto exit_code = child_->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

TEST_F(ControllerProcessTest, BadTokensFileFailsAtStartNamingTheLine) {
  std::ofstream(dir_ + "/bad-tokens") << "client abcdefgh123\nroot zzzzzzzzzz\n";
  auto result = ftune::testing::RunCommand(
      {BinaryPath("ftcontroller"), "--listen", "127.0.0.1:0", "--data-dir", dir_ + "/data",
       "--tokens", dir_ + "/bad-tokens"},
      absl::Seconds(30));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->exit_code, 1);
}

// Secure by default: on an address other machines reach, the controller needs tokens or mTLS,
// or an explicit --allow-insecure; the refusal names the flags. Loopback needs neither.
TEST_F(ControllerProcessTest, ANonLoopbackAddressNeedsTokensMtlsOrAllowInsecure) {
  auto run = [&](const std::string& listen, std::vector<std::string> more) {
    std::vector<std::string> argv = {BinaryPath("ftcontroller"), "--listen", listen,
                                     "--data-dir", dir_ + "/data", "--log-file",
                                     dir_ + "/controller.log"};
    argv.insert(argv.end(), more.begin(), more.end());
    auto child = ChildProcess::Start(argv);
    EXPECT_TRUE(child.ok()) << child.status();
    return std::move(child).value();
  };
  {
    ChildProcess refused = run("0.0.0.0:0", {});
    auto code = refused.Wait(absl::Seconds(30));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_NE(*code, 0);
    std::ifstream log(dir_ + "/controller.log");
    const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(absl::StrContains(text, "--listen 0.0.0.0:0 is reachable from other machines"))
        << text;
    EXPECT_TRUE(absl::StrContains(text, "--tokens")) << text;
    EXPECT_TRUE(absl::StrContains(text, "--allow-insecure")) << text;
  }
  for (const auto& [listen, more] :
       std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"0.0.0.0:0", {"--allow-insecure"}},
           {"0.0.0.0:0", {"--tokens", dir_ + "/tokens"}},
           {"127.0.0.1:0", {}},
           {"localhost:0", {}}}) {
    ChildProcess started = run(listen, more);
    EXPECT_TRUE(started.WaitForListening(absl::Seconds(60)).ok()) << listen;
    started.Signal(SIGTERM);
    EXPECT_TRUE(started.Wait(absl::Seconds(30)).ok());
  }
}

}  // namespace
}  // namespace ftune::server
