// ftcontroller's Prometheus metrics: jobs by state, submits, leases granted and expired,
// requeues, stored events by kind (their rate is events/s), watchers, workers by state,
// parked AcquireJob calls and the latency of the store's commits.
#pragma once

#include <vector>

#include "common/metrics.h"
#include "server/job_manager.h"
#include "server/job_store.h"

namespace ftune::server {

// A JobStore that times every Commit into a histogram and forwards everything else.
class TimedJobStore final : public JobStore {
 public:
  // `inner` must outlive this; the histogram is registered in `registry`.
  TimedJobStore(JobStore* inner, MetricsRegistry* registry);

  absl::Status Commit(const JobRecord& record,
                      const std::vector<ftune::v1::JobEvent>& events) override;
  absl::StatusOr<std::vector<JobRecord>> LoadJobs() override { return inner_->LoadJobs(); }
  absl::StatusOr<std::vector<ftune::v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                              int64_t after_seq,
                                                              int limit) override {
    return inner_->ReadEvents(job_id, after_seq, limit);
  }
  absl::Status PutWorker(const ftune::v1::Worker& worker) override {
    return inner_->PutWorker(worker);
  }
  absl::StatusOr<std::vector<ftune::v1::Worker>> LoadWorkers() override {
    return inner_->LoadWorkers();
  }

 private:
  JobStore* const inner_;
  Histogram& commit_seconds_;
};

// Registers the families that read `manager` whenever the registry renders; `manager`
// must outlive the registry's use.
void RegisterControllerMetrics(MetricsRegistry* registry, const JobManager* manager);

}  // namespace ftune::server
