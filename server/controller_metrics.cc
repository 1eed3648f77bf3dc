#include "server/controller_metrics.h"

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace ftune::server {
namespace {

// JOB_STATE_QUEUED -> queued.
std::string StateLabel(ftune::v1::JobState state) {
  absl::string_view name = ftune::v1::JobState_Name(state);
  absl::ConsumePrefix(&name, "JOB_STATE_");
  return absl::AsciiStrToLower(name);
}

std::string WorkerStateLabel(ftune::v1::WorkerState state) {
  absl::string_view name = ftune::v1::WorkerState_Name(state);
  absl::ConsumePrefix(&name, "WORKER_STATE_");
  return absl::AsciiStrToLower(name);
}

std::vector<MetricSample> One(double value) { return {{{}, value}}; }

}  // namespace

TimedJobStore::TimedJobStore(JobStore* inner, MetricsRegistry* registry)
    : ForwardingJobStore(inner),
      commit_seconds_(registry->AddHistogram(
          "ftune_controller_store_commit_duration_seconds",
          "Time of one durable store commit (a group of job changes and their events, one "
          "SQLite transaction and fsync).",
          {}, ExponentialBuckets(0.0001, 2, 16))),
      commit_changes_(registry->AddHistogram(
          "ftune_controller_store_commit_changes",
          "Job and worker changes written by one store commit (changes made while the "
          "previous commit was in flight share the next one).",
          {}, ExponentialBuckets(1, 2, 12))) {}

absl::Status TimedJobStore::Commit(const StoreBatch& batch) {
  const absl::Time start = absl::Now();
  absl::Status status = ForwardingJobStore::Commit(batch);
  commit_changes_.Observe(static_cast<double>(batch.jobs.size() + batch.workers.size()));
  commit_seconds_.Observe(absl::ToDoubleSeconds(absl::Now() - start));
  return status;
}

void RegisterControllerMetrics(MetricsRegistry* registry, const JobManager* manager) {
  registry->AddGaugeCallback("ftune_controller_jobs", "Jobs by state.", {"state"}, [manager] {
    std::vector<MetricSample> samples;
    for (const auto& [state, count] : manager->JobsByState()) {
      samples.push_back({{StateLabel(state)}, static_cast<double>(count)});
    }
    return samples;
  });
  registry->AddCounterCallback("ftune_controller_jobs_submitted_total",
                               "Jobs created by SubmitJob (idempotent repeats excluded).", {},
                               [manager] { return One(manager->counters().submitted); });
  registry->AddCounterCallback("ftune_controller_leases_granted_total", "Jobs leased to a worker.",
                               {}, [manager] { return One(manager->counters().leases_granted); });
  registry->AddCounterCallback(
      "ftune_controller_leases_expired_total",
      "Leases that ran out without a heartbeat (their worker went silent).", {},
      [manager] { return One(manager->counters().leases_expired); });
  registry->AddCounterCallback(
      "ftune_controller_requeues_total",
      "Jobs queued again: after an expired lease, handed back by a stopping worker, or after an "
      "error that may pass on a later attempt.",
      {"reason"},
      [manager] {
        const JobManagerCounters counters = manager->counters();
        return std::vector<MetricSample>{
            {{"lease_expired"}, static_cast<double>(counters.requeued_after_expiry)},
            {{"handed_back"}, static_cast<double>(counters.requeued_handed_back)},
            {{"retryable_error"}, static_cast<double>(counters.requeued_after_error)}};
      });
  registry->AddCounterCallback(
      "ftune_controller_events_total",
      "Job events stored and fanned out, by kind; rate() of it is the events per second.", {"kind"},
      [manager] {
        std::vector<MetricSample> samples;
        for (const auto& [kind, count] : manager->counters().events) {
          samples.push_back({{kind}, static_cast<double>(count)});
        }
        return samples;
      });
  registry->AddGaugeCallback("ftune_controller_watchers", "Open WatchJob streams.", {},
                             [manager] { return One(manager->watcher_count()); });
  registry->AddGaugeCallback("ftune_controller_jobs_in_memory",
                             "Jobs held in memory (live ones; ended ones are read from the store).",
                             {}, [manager] { return One(manager->jobs_in_memory()); });
  registry->AddGaugeCallback("ftune_controller_store_queued_changes",
                             "Changes waiting for the next group commit.", {},
                             [manager] { return One(manager->queued_writes()); });
  registry->AddGaugeCallback("ftune_controller_acquire_waiters",
                             "AcquireJob long polls parked waiting for a job.", {},
                             [manager] { return One(manager->waiting_acquires()); });
  registry->AddGaugeCallback(
      "ftune_controller_workers", "Registered workers by state.", {"state"}, [manager] {
        std::map<std::string, int> counts = {{"online", 0}, {"draining", 0}, {"offline", 0}};
        for (const ftune::v1::Worker& worker : manager->ListWorkers()) {
          ++counts[WorkerStateLabel(worker.state())];
        }
        std::vector<MetricSample> samples;
        for (const auto& [state, count] : counts) {
          samples.push_back({{state}, static_cast<double>(count)});
        }
        return samples;
      });
}

}  // namespace ftune::server
