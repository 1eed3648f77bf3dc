// ftworker's Prometheus metrics, derived from what the daemon already sees (the trainer is
// not touched): running jobs, hand-backs, and per job (label `job`, dropped when the job
// ends) training samples/s, step time, last loss, last eval accuracy and progress; the
// time checkpoints take to save; memory per device.
//
// Step time is the time between two train_progress events over the steps between them,
// less the evaluations (eval_result.seconds) and checkpoint saves in that window. A
// checkpoint's save time is the time from the event before it, when that event belongs to
// the same step (the trainer saves right after logging or evaluating that step); other
// saves are not timed.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "absl/time/time.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "worker/daemon/job_observer.h"

namespace ftune::daemon {

class WorkerMetrics final : public JobObserver {
 public:
  // Bytes in use per device ("cpu", "cuda:0", ...), read on every scrape.
  using MemoryProbe = std::function<std::map<std::string, double>()>;

  // Registers the families in `registry` (which must outlive this). `clock` times events.
  explicit WorkerMetrics(MetricsRegistry* registry, Clock* clock = Clock::Real());

  // Exports `probe`'s readings as ftune_worker_device_memory_bytes. Call once.
  void WatchDeviceMemory(MemoryProbe probe);

  void OnJobStarted(const ftune::v1::Job& job, const std::string& device) override;
  void OnJobEvent(const std::string& job_id, const ftune::v1::JobEvent& event) override;
  void OnJobFinished(const std::string& job_id, ftune::v1::JobOutcome outcome) override;

 private:
  struct Timing {
    // The last train_progress: when, at which step.
    absl::Time progress_time = absl::InfinitePast();
    int64_t progress_step = -1;
    // Evaluation and checkpoint time since then, not spent on steps.
    absl::Duration not_training;
    // The last event of any kind: when, at which step (-1: it names none).
    absl::Time event_time = absl::InfinitePast();
    int64_t event_step = -1;
  };

  MetricsRegistry* const registry_;
  Clock* const clock_;
  Gauge& running_;
  Counter& started_;
  Counter& hand_backs_;
  Gauge& samples_per_second_;
  Gauge& step_seconds_;
  Gauge& loss_;
  Gauge& accuracy_;
  Gauge& progress_;
  Histogram& checkpoint_seconds_;

  std::mutex mu_;
  std::map<std::string, Timing> jobs_;
};

// This process's resident memory in bytes (0 when /proc cannot say).
double ProcessResidentBytes();

}  // namespace ftune::daemon
