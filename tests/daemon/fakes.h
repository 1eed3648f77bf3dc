// Hand-written fakes for the worker daemon: an in-memory controller (WorkerClient) and a
// scripted JobRunner. Both record what happened and let a test wait for it on a condition
// variable instead of sleeping.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "worker/daemon/worker_client.h"
#include "worker/train/job_runner.h"

namespace ftune::daemon {

// Waits on `cv` until `pred` holds or `timeout` passes; the result of `pred`.
template <typename Pred>
bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Pred pred,
             absl::Duration timeout = absl::Seconds(20)) {
  return cv.wait_for(lock, absl::ToChronoNanoseconds(timeout), pred);
}

class FakeController final : public WorkerClient {
 public:
  // Queues a job for AcquireJob (lease id "lease-<job id>").
  void AddJob(const ftune::v1::Job& job, double lease_seconds = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({job, lease_seconds, "lease-" + job.id(), std::nullopt});
    cv_.notify_all();
  }
  // Queues one rank of a data-parallel job under its own lease.
  void AddRank(const ftune::v1::Job& job, const ftune::v1::Rendezvous& rendezvous,
               const std::string& lease_id) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({job, 0, lease_id, rendezvous});
    cv_.notify_all();
  }
  // Every call fails with `status` while it is not OK (the controller is down).
  void SetDown(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    down_ = std::move(status);
    cv_.notify_all();
  }
  // The next `n` ReportEvents calls fail with `status`.
  void FailReports(int n, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    failing_reports_ = n;
    report_failure_ = std::move(status);
  }
  // The next `n` AcquireJob calls fail with `status`.
  void FailAcquires(int n, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    failing_acquires_ = n;
    acquire_failure_ = std::move(status);
  }
  // Verdict returned for `job_id` by Heartbeat and ReportEvents.
  void SetVerdict(const std::string& job_id, ftune::v1::LeaseVerdict verdict) {
    std::lock_guard<std::mutex> lock(mu_);
    verdicts_[job_id] = verdict;
  }
  // The next heartbeat answers reregister.
  void ForgetWorker() {
    std::lock_guard<std::mutex> lock(mu_);
    forget_ = true;
  }
  // ReportEvents blocks until Unblock() while blocked.
  void BlockReports() {
    std::lock_guard<std::mutex> lock(mu_);
    reports_blocked_ = true;
  }
  void UnblockReports() {
    std::lock_guard<std::mutex> lock(mu_);
    reports_blocked_ = false;
    cv_.notify_all();
  }

  // Waits until `pred(*this)` holds; call with no lock held.
  bool Await(const std::function<bool(const FakeController&)>& pred,
             absl::Duration timeout = absl::Seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    return WaitFor(
        cv_, lock, [&] { return pred(*this); }, timeout);
  }

  // Recorded calls (read under Await's predicate, or after the daemon stopped).
  std::vector<ftune::v1::RegisterWorkerRequest> registrations;
  std::vector<ftune::v1::AcquireJobRequest> acquires;
  std::vector<ftune::v1::HeartbeatRequest> heartbeats;
  // Every ReportEvents call, including failed ones.
  std::vector<ftune::v1::ReportEventsRequest> reports;
  // Events stored, per job, deduplicated by (lease, batch_id) like the real controller.
  std::map<std::string, std::vector<ftune::v1::JobEvent>> stored;
  std::vector<ftune::v1::CompleteJobRequest> completions;

  absl::StatusOr<ftune::v1::RegisterWorkerResponse> RegisterWorker(
      const ftune::v1::RegisterWorkerRequest& request) override {
    std::lock_guard<std::mutex> lock(mu_);
    registrations.push_back(request);
    cv_.notify_all();
    if (!down_.ok()) return down_;
    ftune::v1::RegisterWorkerResponse response;
    response.set_heartbeat_interval_seconds(0.01);
    response.set_lease_seconds(30);
    return response;
  }

  absl::StatusOr<ftune::v1::AcquireJobResponse> AcquireJob(
      const ftune::v1::AcquireJobRequest& request) override {
    std::unique_lock<std::mutex> lock(mu_);
    acquires.push_back(request);
    cv_.notify_all();
    if (!down_.ok()) return down_;
    if (failing_acquires_ > 0) {
      --failing_acquires_;
      return acquire_failure_;
    }
    // A real long poll: wait for a job, a cancel or the end of the wait.
    WaitFor(
        cv_, lock, [&] { return cancelled_ || !pending_.empty() || !down_.ok(); },
        absl::Seconds(request.wait_seconds()));
    if (cancelled_) return absl::CancelledError("acquire cancelled");
    if (!down_.ok()) return down_;
    ftune::v1::AcquireJobResponse response;
    if (pending_.empty()) return response;
    Pending next = pending_.front();
    pending_.pop_front();
    next.job.set_worker_id(request.worker_id());
    *response.mutable_job() = next.job;
    response.set_lease_id(next.lease_id);
    response.set_device(request.free_devices(0));
    response.set_lease_seconds(next.lease_seconds);
    if (next.rendezvous) *response.mutable_rendezvous() = *next.rendezvous;
    return response;
  }

  absl::StatusOr<ftune::v1::HeartbeatResponse> Heartbeat(
      const ftune::v1::HeartbeatRequest& request) override {
    std::lock_guard<std::mutex> lock(mu_);
    heartbeats.push_back(request);
    cv_.notify_all();
    if (!down_.ok()) return down_;
    ftune::v1::HeartbeatResponse response;
    if (forget_) {
      forget_ = false;
      response.set_reregister(true);
    }
    for (const auto& renewal : request.leases()) {
      auto* status = response.add_leases();
      status->set_job_id(renewal.job_id());
      status->set_lease_id(renewal.lease_id());
      status->set_verdict(VerdictLocked(renewal.job_id()));
    }
    return response;
  }

  absl::StatusOr<ftune::v1::ReportEventsResponse> ReportEvents(
      const ftune::v1::ReportEventsRequest& request) override {
    std::unique_lock<std::mutex> lock(mu_);
    reports.push_back(request);
    cv_.notify_all();
    cv_.wait(lock, [&] { return !reports_blocked_; });
    if (!down_.ok()) return down_;
    if (failing_reports_ > 0) {
      --failing_reports_;
      return report_failure_;
    }
    auto& batches = batches_[request.lease_id()];
    if (batches.insert(request.batch_id()).second) {
      for (const auto& event : request.events()) stored[request.job_id()].push_back(event);
    }
    ftune::v1::ReportEventsResponse response;
    response.set_last_seq(static_cast<int64_t>(stored[request.job_id()].size()));
    response.set_verdict(VerdictLocked(request.job_id()));
    cv_.notify_all();
    return response;
  }

  absl::StatusOr<ftune::v1::CompleteJobResponse> CompleteJob(
      const ftune::v1::CompleteJobRequest& request) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!down_.ok()) {
      cv_.notify_all();
      return down_;
    }
    completions.push_back(request);
    cv_.notify_all();
    ftune::v1::CompleteJobResponse response;
    response.mutable_job()->set_id(request.job_id());
    return response;
  }

  void CancelAcquire() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  ftune::v1::LeaseVerdict VerdictLocked(const std::string& job_id) const {
    auto it = verdicts_.find(job_id);
    return it == verdicts_.end() ? ftune::v1::LEASE_VERDICT_OK : it->second;
  }

  struct Pending {
    ftune::v1::Job job;
    double lease_seconds = 0;
    std::string lease_id;
    std::optional<ftune::v1::Rendezvous> rendezvous;
  };

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  absl::Status down_;
  int failing_reports_ = 0;
  absl::Status report_failure_;
  int failing_acquires_ = 0;
  absl::Status acquire_failure_;
  std::map<std::string, ftune::v1::LeaseVerdict> verdicts_;
  std::map<std::string, std::set<uint64_t>> batches_;
  bool forget_ = false;
  bool reports_blocked_ = false;
  bool cancelled_ = false;
};

// Emits a few events, then either returns at once (`finish_at_once`) or runs until the test
// calls Finish(job) or the cancel token asks it to stop, like a trainer polling per step.
class ScriptedRunner final : public train::JobRunner {
 public:
  explicit ScriptedRunner(bool finish_at_once = false) : finish_at_once_(finish_at_once) {}

  train::JobRunResult Run(const ftune::v1::Job& job, const train::Placement& placement,
                          train::EventSink* sink, train::CancelToken* cancel) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      started.push_back({job.id(), placement.device});
      placements.push_back(placement);
      ++running_;
      max_running = std::max(max_running, running_);
      cv_.notify_all();
    }
    for (int step = 1; step <= 3; ++step) {
      ftune::v1::JobEvent event;
      event.mutable_train_progress()->set_step(step);
      sink->Emit(event);
    }
    std::unique_lock<std::mutex> lock(mu_);
    // Polls the token as the trainer does once per optimizer step.
    while (!finish_at_once_ && !finished_.count(job.id()) && !cancel->stop_requested()) {
      cv_.wait_for(lock, std::chrono::milliseconds(2));
    }
    --running_;
    train::JobRunResult result;
    const train::StopReason reason = cancel->reason();
    stop_reasons[job.id()] = reason;
    if (reason == train::StopReason::kCancel) {
      result.outcome = ftune::v1::JOB_OUTCOME_CANCELLED;
    } else if (reason == train::StopReason::kHandBack) {
      result.outcome = ftune::v1::JOB_OUTCOME_REQUEUE;
      result.last_checkpoint = job.spec().output_dir() + "/checkpoint-3";
    } else if (reason == train::StopReason::kLeaseLost) {
      result.outcome = ftune::v1::JOB_OUTCOME_REQUEUE;
    } else {
      result.outcome = ftune::v1::JOB_OUTCOME_SUCCEEDED;
      result.best_checkpoint = job.spec().output_dir() + "/best";
      result.best_metric_name = "accuracy";
      result.best_metric = 0.75;
    }
    ++returned;
    cv_.notify_all();
    return result;
  }

  void Finish(const std::string& job_id) {
    std::lock_guard<std::mutex> lock(mu_);
    finished_.insert(job_id);
    cv_.notify_all();
  }

  bool Await(const std::function<bool(const ScriptedRunner&)>& pred,
             absl::Duration timeout = absl::Seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    return WaitFor(
        cv_, lock, [&] { return pred(*this); }, timeout);
  }

  std::vector<std::pair<std::string, std::string>> started;  // (job id, device)
  std::vector<train::Placement> placements;                 // in the order runs started
  std::map<std::string, train::StopReason> stop_reasons;
  int max_running = 0;
  int returned = 0;

 private:
  const bool finish_at_once_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> finished_;
  int running_ = 0;
};

}  // namespace ftune::daemon
