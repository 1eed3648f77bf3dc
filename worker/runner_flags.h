// The flags of `ftworker run` and `ftworker train` that bound what a job keeps in memory.
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "worker/train/job_runner.h"

namespace ftune::worker {

struct CacheFlags {
  int64_t audio_cache_mb = 2048;
  std::string audio_cache_dir;
  int64_t feature_cache_mb = 2048;

  void AddTo(CLI::App* cmd);
  // Copies the budgets into `options`.
  void Apply(train::RunnerOptions* options) const;
};

}  // namespace ftune::worker
