#include "worker/daemon/worker_metrics.h"

#include <unistd.h>

#include <fstream>

namespace ftune::daemon {

namespace v1 = ::ftune::v1;

WorkerMetrics::WorkerMetrics(MetricsRegistry* registry, Clock* clock)
    : registry_(registry),
      clock_(clock),
      running_(registry->AddGauge("ftune_worker_running_jobs", "Jobs running on this worker.")),
      started_(registry->AddCounter("ftune_worker_jobs_started_total",
                                    "Jobs this worker leased and started.")),
      hand_backs_(registry->AddCounter(
          "ftune_worker_hand_backs_total",
          "Jobs checkpointed and handed back to the queue (the worker was stopping).")),
      samples_per_second_(registry->AddGauge("ftune_worker_train_samples_per_second",
                                             "Training clips per second over the last "
                                             "logging window.",
                                             {"job"})),
      step_seconds_(registry->AddGauge("ftune_worker_step_seconds",
                                       "Time of one optimizer step over the last logging "
                                       "window, evaluation and checkpoints excluded.",
                                       {"job"})),
      loss_(registry->AddGauge("ftune_worker_train_loss",
                               "Mean training loss over the last logging window.", {"job"})),
      accuracy_(registry->AddGauge("ftune_worker_eval_accuracy", "Accuracy of the last evaluation.",
                                   {"job"})),
      progress_(registry->AddGauge("ftune_worker_train_progress_ratio",
                                   "Optimizer steps done over the run's total.", {"job"})),
      checkpoint_seconds_(registry->AddHistogram(
          "ftune_worker_checkpoint_save_seconds",
          "Time to write a checkpoint (model, optimizer and training state).", {},
          ExponentialBuckets(0.01, 2, 14))) {}

void WorkerMetrics::WatchDeviceMemory(MemoryProbe probe) {
  registry_->AddGaugeCallback(
      "ftune_worker_device_memory_bytes",
      "Memory in use per device: the process' resident set for cpu, tensors allocated by "
      "the CUDA caching allocator for cuda:N.",
      {"device"}, [probe = std::move(probe)] {
        std::vector<MetricSample> samples;
        for (const auto& [device, bytes] : probe()) samples.push_back({{device}, bytes});
        return samples;
      });
}

void WorkerMetrics::OnJobStarted(const v1::Job& job, const std::string& device) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_[job.id()] = Timing();
  }
  running_.Add({}, 1);
  started_.Increment();
}

void WorkerMetrics::OnJobEvent(const std::string& job_id, const v1::JobEvent& event) {
  const absl::Time now = clock_->Now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Timing& timing = it->second;
  int64_t step = -1;
  switch (event.payload_case()) {
    case v1::JobEvent::kTrainProgress: {
      const v1::TrainProgress& p = event.train_progress();
      step = p.step();
      samples_per_second_.Set({job_id}, p.samples_per_sec());
      loss_.Set({job_id}, p.loss());
      if (p.total_steps() > 0) {
        progress_.Set({job_id},
                      static_cast<double>(p.step()) / static_cast<double>(p.total_steps()));
      }
      if (timing.progress_step >= 0 && p.step() > timing.progress_step) {
        const absl::Duration training = now - timing.progress_time - timing.not_training;
        step_seconds_.Set({job_id}, std::max(0.0, absl::ToDoubleSeconds(training)) /
                                        static_cast<double>(p.step() - timing.progress_step));
      }
      timing.progress_time = now;
      timing.progress_step = p.step();
      timing.not_training = absl::ZeroDuration();
      break;
    }
    case v1::JobEvent::kEvalResult:
      step = event.eval_result().step();
      accuracy_.Set({job_id}, event.eval_result().accuracy());
      timing.not_training += absl::Seconds(event.eval_result().seconds());
      break;
    case v1::JobEvent::kCheckpointSaved:
      step = event.checkpoint_saved().step();
      if (timing.event_step == step) {
        const absl::Duration saving = now - timing.event_time;
        checkpoint_seconds_.Observe(absl::ToDoubleSeconds(saving));
        timing.not_training += saving;
      }
      break;
    default:
      break;
  }
  timing.event_time = now;
  timing.event_step = step;
}

void WorkerMetrics::OnJobFinished(const std::string& job_id, v1::JobOutcome outcome) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (jobs_.erase(job_id) == 0) return;
  }
  for (Gauge* gauge : {&samples_per_second_, &step_seconds_, &loss_, &accuracy_, &progress_}) {
    gauge->Remove({job_id});
  }
  running_.Add({}, -1);
  if (outcome == v1::JOB_OUTCOME_REQUEUE) hand_backs_.Increment();
}

double ProcessResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

}  // namespace ftune::daemon
