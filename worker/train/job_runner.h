// Runs one fine-tuning job to its end: the boundary between the worker daemon (or the local
// `ftworker train`) and the ML stack. Knows nothing of RPC.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ftune/v1/job.pb.h"
#include "ftune/v1/worker.pb.h"
#include "worker/train/cancel_token.h"
#include "worker/train/distributed_options.h"
#include "worker/train/event_sink.h"

namespace ftune::train {

struct JobRunResult {
  // SUCCEEDED, FAILED (final: an error the same inputs would hit again), CANCELLED (token
  // kCancel), REQUEUE (handed back on kHandBack or kLeaseLost) or RETRY (a transient error
  // worth another attempt, counted against max_restarts).
  ftune::v1::JobOutcome outcome = ftune::v1::JOB_OUTCOME_UNSPECIFIED;
  std::string error;
  std::string best_checkpoint;
  std::string last_checkpoint;
  std::string best_metric_name;
  double best_metric = 0;
};

// Where one run of a job goes.
struct Placement {
  // "cpu", "cuda:N"; empty: the spec's device.
  std::string device;
  // The rank this run is of a data-parallel job (world_size 1: the whole job).
  DistributedOptions distributed;
};

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Runs `job` (or its rank) as placed, resuming from the newest complete checkpoint in the
  // job's output_dir when there is one. Emits events to `sink`; polls `cancel`. A rank other
  // than 0 emits only its warnings and errors and writes nothing to output_dir.
  virtual JobRunResult Run(const ftune::v1::Job& job, const Placement& placement,
                           EventSink* sink, CancelToken* cancel) = 0;
};

struct RunnerOptions {
  // Intra-op threads when the spec leaves threads at 0; 0 = all cores.
  int default_threads = 0;
  // Data loader threads; 0 = automatic.
  int loader_threads = 0;
  // Each job's decoded audio: at most this much in memory (least recently used clips are
  // dropped and decoded again, or read back from disk_dir when set).
  int64_t audio_cache_bytes = int64_t{2} << 30;
  std::string audio_cache_dir;
  // Each job's cached feature-encoder output (frozen encoders), in host memory.
  int64_t feature_cache_bytes = int64_t{2} << 30;
  // Folders every file a job reads or writes must resolve into (the worker's --allowed-root):
  // dataset files and manifest rows, the model folder's files, the output folder's contents.
  // Empty = anywhere.
  std::vector<std::string> allowed_roots;
};

// The real runner: dataset scan, model load, the training loop, checkpoints.
std::unique_ptr<JobRunner> MakeFineTuneRunner(const RunnerOptions& options);

}  // namespace ftune::train
