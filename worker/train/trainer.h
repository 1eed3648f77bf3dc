// The fine-tuning loop: AdamW + schedule + (optional) loss scaling over a data::Dataset,
// evaluation, checkpoints, early stopping, cancellation and exact resume. Knows nothing of
// RPC: it takes a config, a model, a dataset, an event sink and a cancel token.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/data/audio_cache.h"
#include "worker/data/batch_loader.h"
#include "worker/data/dataset.h"
#include "worker/model/checkpoint.h"
#include "worker/train/cancel_token.h"
#include "worker/train/distributed.h"
#include "worker/train/event_sink.h"
#include "worker/train/trainer_config.h"

namespace ftune::train {

enum class TrainEnd {
  kCompleted,     // all epochs ran
  kEarlyStopped,  // patience exhausted
  kCancelled,     // CancelToken kCancel: resumable checkpoint saved
  kHandedBack,    // CancelToken kHandBack: resumable checkpoint saved
  kLeaseLost,     // CancelToken kLeaseLost: stopped at once, nothing saved
};
const char* TrainEndName(TrainEnd end);

struct TrainResult {
  TrainEnd end = TrainEnd::kCompleted;
  int64_t steps = 0;        // optimizer steps done (including steps before a resume)
  int64_t total_steps = 0;  // planned
  int64_t skipped_steps = 0;
  bool resumed = false;
  std::string best_checkpoint;  // best/ ("" before any evaluation)
  std::string last_checkpoint;  // newest checkpoint-<step>/
  std::string best_metric_name;
  double best_metric = 0;
  double best_accuracy = 0;  // accuracy of the evaluation that made best/
  double last_accuracy = 0;
  double seconds = 0;  // wall time of this run (not counting runs before a resume)
};

struct TrainerOptions {
  // The model came from a preset (random initialisation): an unset freeze_feature_encoder
  // then means trainable (there is nothing pretrained to keep).
  bool random_init = false;
  // Reuse a frozen feature encoder's output across epochs (exact when nothing random comes
  // before it, i.e. no random crop). Tests turn it off to compare.
  bool cache_features = true;
  // Host memory for that reuse; past it the least recently used clips are computed again.
  int64_t feature_cache_bytes = int64_t{2} << 30;
  // Resume from the newest complete checkpoint in output_dir when there is one.
  bool resume = true;
  // Writes more files into each checkpoint folder before it is renamed into place (Hugging
  // Face's trainer_state.json and the model card); `epoch` is the fractional position.
  std::function<absl::Status(const std::string& dir, int64_t step, double epoch)>
      write_checkpoint_extras;
  // Whose scratch folders in output_dir these are (CheckpointManager): a later attempt of the
  // same job clears what an interrupted one left, and nothing else.
  std::string job_id = "local";
  uint32_t attempt = 0;
  // One rank of a data-parallel run (world_size > 1): joins the group in Create; rank 0 alone
  // writes checkpoints and emits events (other ranks pass on only their warnings and errors).
  DistributedOptions distributed;
};

class Trainer {
 public:
  // Validates the combination (device, precision, freezing) and prepares the run; the model
  // is moved to the device. `cache`, `sink` and `cancel` must outlive the trainer.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      const TrainerConfig& config, model::LoadedModel model, data::Dataset dataset,
      data::AudioCache* cache, EventSink* sink, CancelToken* cancel,
      const TrainerOptions& options = {});
  ~Trainer();

  // Trains to the end (or until stopped). Errors: NotFound / FailedPrecondition / Invalid-
  // Argument for problems that would repeat (bad checkpoint to resume), Internal otherwise.
  absl::StatusOr<TrainResult> Run();

  // The model being trained (for tests and benchmarks).
  model::HubertForSequenceClassification& model();

  // One optimizer step over `batches` (the micro-batches of one accumulation window) exactly
  // as a job takes it, at the schedule's current learning rate; for benchmarks and step
  // parity tests. The gradients stay on the parameters until the next step (unscaled,
  // unclipped). `reuse_features`: go through the frozen feature encoder's cache as epochs 2+
  // do (FailedPrecondition when the encoder is trainable).
  struct StepStats {
    double loss = 0;       // mean over the window's samples
    double grad_norm = 0;  // before clipping; inf when the step was skipped
    bool taken = false;    // false: skipped on inf/NaN gradients (loss scaling)
  };
  absl::StatusOr<StepStats> TrainStep(const std::vector<data::Batch>& batches,
                                      bool reuse_features = false);

 private:
  struct State;
  explicit Trainer(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace ftune::train
