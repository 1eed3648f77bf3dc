// One evaluation pass: the loss and the confusion counts over a set of clips, summed across
// ranks when the run is data-parallel (each rank passes its share of the clips), and the error
// naming the clips of a batch the model could not take (shared with the training step).
#pragma once

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "torch/torch.h"
#include "worker/data/audio_cache.h"
#include "worker/data/batch_loader.h"
#include "worker/data/dataset.h"
#include "worker/train/distributed.h"
#include "worker/train/metrics.h"

namespace ftune::train {

struct EvaluationPass {
  ClassificationMetrics metrics;
  double loss = 0;           // mean cross-entropy over the clips
  bool interrupted = false;  // `stop` asked to end early: no result
};

struct EvaluationInputs {
  const std::vector<data::Clip>* clips = nullptr;
  data::AudioCache* cache = nullptr;
  data::LoaderOptions loader;
  int num_labels = 0;
  // Float logits of a batch; called with gradients off.
  std::function<torch::Tensor(const data::Batch&)> logits;
  // Checked before each batch (nullptr: never stop).
  std::function<bool()> stop;
  // Data-parallel: the counts of all ranks are summed (every rank then holds the whole set's).
  Collective* collective = nullptr;
};

absl::StatusOr<EvaluationPass> Evaluate(const EvaluationInputs& in);

// A libtorch error on a batch, naming its clips. Running out of memory may pass on another
// worker or attempt (ResourceExhausted); anything else, a shape or a value, the same clips
// would hit again (InvalidArgument).
absl::Status ClipError(const char* doing, const data::Batch& batch,
                       const std::vector<data::Clip>& clips, const c10::Error& e);

}  // namespace ftune::train
