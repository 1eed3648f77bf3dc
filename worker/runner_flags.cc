#include "worker/runner_flags.h"

namespace ftune::worker {

void CacheFlags::AddTo(CLI::App* cmd) {
  cmd->add_option("--audio-cache-mb", audio_cache_mb,
                  "Decoded audio a job keeps in memory; past it clips are decoded again (or read "
                  "from --audio-cache-dir)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--audio-cache-dir", audio_cache_dir,
                  "Folder for decoded audio that falls out of memory (a subfolder per job, "
                  "removed when the job ends)");
  cmd->add_option("--feature-cache-mb", feature_cache_mb,
                  "Frozen feature-encoder output a job keeps for later epochs; past it clips "
                  "are encoded again")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

void CacheFlags::Apply(train::RunnerOptions* options) const {
  options->audio_cache_bytes = audio_cache_mb << 20;
  options->audio_cache_dir = audio_cache_dir;
  options->feature_cache_bytes = feature_cache_mb << 20;
}

}  // namespace ftune::worker
