// Batches of clips for training and evaluation: crop, normalise, pad, collate into tensors,
// built ahead of the trainer by background threads. What a batch holds is a pure function of
// (clips, options, batch index), so any thread count and a resume mid-epoch give the same
// batches.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "torch/torch.h"
#include "worker/data/audio_cache.h"
#include "worker/data/dataset.h"

namespace ftune::data {

struct Batch {
  torch::Tensor audio;    // [B, Tmax] float32, zero padded, normalised when options.normalize
  torch::Tensor lengths;  // [B] int64 valid samples
  torch::Tensor labels;   // [B] int64
  std::vector<int64_t> clip_indices;  // into the clip vector
};

struct LoaderOptions {
  int batch_size = 8;
  bool shuffle = false;  // order shuffled by (seed, epoch)
  uint64_t seed = 42;
  int epoch = 0;
  // Longest clip in seconds; 0 = no crop. Longer clips are cropped at a random offset drawn
  // from (seed, epoch, clip) when random_crop (training), centred otherwise (evaluation).
  double max_seconds = 0;
  bool random_crop = false;
  // Batches of similar lengths (as Hugging Face's group_by_length): shuffled order cut into
  // megabatches of 50 batches, each sorted longest first; without shuffle, all sorted.
  bool group_by_length = false;
  // Zero mean, unit variance per clip over its valid samples; padding stays 0.
  bool normalize = true;
  // Background threads building batches (0 = build in Next()) and batches built ahead.
  int threads = 2;
  int prefetch = 4;
  // Resume inside an epoch: skip the first N batches of this epoch's order.
  int64_t start_batch = 0;
  // Data-parallel ranks: the epoch is planned as for one loader with batch_size x shard_count
  // (same order, same global batches), and this one takes slice shard_rank of each global
  // batch, which may be short or empty at the epoch's end.
  int shard_rank = 0;
  int shard_count = 1;
};

// The epoch's batches as clip indices, before start_batch is applied. Pure.
std::vector<std::vector<int64_t>> PlanEpoch(const std::vector<Clip>& clips,
                                            const LoaderOptions& options);

// The [offset, offset + length) window of a clip of `samples` samples used by a batch. Pure.
struct CropWindow {
  int64_t offset = 0;
  int64_t length = 0;
};
CropWindow ChooseCrop(int64_t samples, int64_t clip_index, const LoaderOptions& options);

class BatchLoader {
 public:
  // `cache` (not null) must outlive the loader; usually the one LoadDataset filled.
  BatchLoader(std::vector<Clip> clips, AudioCache* cache, LoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Batches in the whole epoch (start_batch included): ceil(clips / batch_size).
  int64_t num_batches() const;
  // Next batch in order; nullopt at the end of the epoch; an error if a clip fails to decode
  // (and the same error on every later call).
  absl::StatusOr<std::optional<Batch>> Next();

 private:
  absl::StatusOr<Batch> Build(int64_t batch) const;
  void Work();

  const std::vector<Clip> clips_;
  AudioCache* const cache_;
  const LoaderOptions options_;
  const std::vector<std::vector<int64_t>> plan_;

  int num_threads_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t next_build_;    // guarded by mu_
  int64_t next_consume_;  // guarded by mu_
  bool stop_ = false;     // guarded by mu_
  std::map<int64_t, absl::StatusOr<Batch>> ready_;  // guarded by mu_
  absl::Status failed_;
  std::vector<std::thread> threads_;
};

}  // namespace ftune::data
