// Runs one fine-tuning job to its end: the boundary between the worker daemon (or the local
// `ftworker train`) and the ML stack. Knows nothing of RPC.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ftune/v1/job.pb.h"
#include "ftune/v1/worker.pb.h"
#include "worker/train/cancel_token.h"
#include "worker/train/event_sink.h"

namespace ftune::train {

struct JobRunResult {
  // SUCCEEDED, FAILED (final: bad dataset/checkpoint/spec), CANCELLED (token kCancel), or
  // REQUEUE (handed back on kHandBack, or a transient error worth another attempt).
  ftune::v1::JobOutcome outcome = ftune::v1::JOB_OUTCOME_UNSPECIFIED;
  std::string error;
  std::string best_checkpoint;
  std::string last_checkpoint;
  std::string best_metric_name;
  double best_metric = 0;
};

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Runs `job` on `device` ("cpu", "cuda:N"), resuming from the newest complete checkpoint
  // in the job's output_dir when there is one. Emits events to `sink`; polls `cancel`.
  virtual JobRunResult Run(const ftune::v1::Job& job, const std::string& device,
                           EventSink* sink, CancelToken* cancel) = 0;
};

struct RunnerOptions {
  // Intra-op threads when the spec leaves threads at 0; 0 = all cores.
  int default_threads = 0;
  // Data loader threads; 0 = automatic.
  int loader_threads = 0;
};

// The real runner: dataset scan, model load, the training loop, checkpoints.
std::unique_ptr<JobRunner> MakeFineTuneRunner(const RunnerOptions& options);

}  // namespace ftune::train
