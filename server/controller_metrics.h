// ftcontroller's Prometheus metrics: jobs by state, submits, leases granted and expired,
// requeues, stored events by kind (their rate is events/s), watchers, workers by state,
// parked AcquireJob calls and the latency of the store's commits.
#pragma once

#include <vector>

#include "common/metrics.h"
#include "server/job_manager.h"
#include "server/job_store.h"

namespace ftune::server {

// A JobStore that times every Commit into a histogram, records how many changes each one
// carried (group commit), and forwards everything else.
class TimedJobStore final : public ForwardingJobStore {
 public:
  // `inner` must outlive this; the histograms are registered in `registry`.
  TimedJobStore(JobStore* inner, MetricsRegistry* registry);

  absl::Status Commit(const StoreBatch& batch) override;

 private:
  Histogram& commit_seconds_;
  Histogram& commit_changes_;
};

// Registers the families that read `manager` whenever the registry renders; `manager`
// must outlive the registry's use.
void RegisterControllerMetrics(MetricsRegistry* registry, const JobManager* manager);

}  // namespace ftune::server
