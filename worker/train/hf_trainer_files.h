// The files Hugging Face Trainer leaves in an output folder, made from the events a job emits:
//
//   checkpoint-<step>/trainer_state.json  HF's TrainerState: log_history (loss, learning_rate,
//                                         grad_norm, epoch, step; eval_* entries), best_metric,
//                                         best_model_checkpoint, global_step, epoch, ...
//   checkpoint-<step>/README.md           the checkpoint's model card (model_card.h); best/ is a
//                                         copy of a checkpoint, so best/README.md is the best's
//   train_results.json, eval_results.json, all_results.json, trainer_state.json
//                                         at the end of a run that completed or stopped early
//
// HF's trainer_state.json sits at the top of the checkpoint folder, as HF writes it; ftune's own
// resume state is training_state/trainer_state.json (optimizer position, loss scaler, recipe).
// Only TrainerState fields that transformers >= 4.31 reads are written: it rejects others.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ftune/v1/job.pb.h"
#include "nlohmann/json.hpp"
#include "worker/train/event_sink.h"
#include "worker/train/trainer_config.h"

namespace ftune::train {

struct HfTrainerFilesOptions {
  // The job, for names; `config` holds its resolved hyperparameters.
  ftune::v1::JobSpec spec;
  TrainerConfig config;
  // The model starts from a preset's random weights (the feature encoder then trains unless
  // the job freezes it).
  bool random_init = false;
  // Hub id the weights came from (model card base_model), "" when unknown.
  std::string base_model;
  // In words, when there is no base model: "the tiny preset (random initialisation)".
  std::string started_from;
};

// An EventSink decorator: every event goes on to `next` unchanged; progress and evaluations
// become log_history entries, the dataset summary and evaluations feed the model card.
class HfTrainerFiles : public EventSink {
 public:
  HfTrainerFiles(HfTrainerFilesOptions options, EventSink* next);

  void Emit(ftune::v1::JobEvent event) override;

  void set_base_model(std::string hub_id) { options_.base_model = std::move(hub_id); }
  void set_started_from(std::string words) { options_.started_from = std::move(words); }

  // Continues the log of the run saved in `checkpoint_dir` (its HF trainer_state.json), as a
  // resumed run does. NotFound when the checkpoint has none (saved before ftune wrote it),
  // InvalidArgument when it cannot be read; the log then starts empty.
  absl::Status ContinueFrom(const std::string& checkpoint_dir);

  // Writes trainer_state.json and README.md into a checkpoint folder being saved at `step`
  // (`epoch`: fractional position). The trainer calls it before the folder is renamed into place.
  absl::Status WriteCheckpointFiles(const std::string& dir, int64_t step, double epoch);

  // At the end of a run that completed or stopped early, after its last checkpoint:
  // train_results.json (train_loss, train_runtime, train_samples_per_second,
  // train_steps_per_second, epoch), eval_results.json (the evaluation of best/, as HF with
  // load_best_model_at_end), all_results.json (both) and trainer_state.json into output_dir.
  // `train_runtime`: seconds this process trained.
  absl::Status WriteRunResults(double train_runtime);

  // HF's TrainerState as of `step`.
  nlohmann::json TrainerState(int64_t step, double epoch) const;
  const std::vector<nlohmann::json>& log_history() const { return log_history_; }

 private:
  double MetricValue(const ftune::v1::EvalResult& eval) const;
  nlohmann::json EvalEntry(const ftune::v1::EvalResult& eval) const;
  std::string ModelCard(int64_t step, double epoch) const;
  std::vector<std::pair<std::string, std::string>> Hyperparameters() const;
  int64_t TotalSteps() const;

  HfTrainerFilesOptions options_;
  EventSink* next_;
  std::vector<nlohmann::json> log_history_;
  std::optional<ftune::v1::DatasetSummary> dataset_;
  std::optional<ftune::v1::EvalResult> last_eval_;
  std::optional<double> best_metric_;
  int64_t best_step_ = -1;
  // Where this process started (a resumed run's checkpoint) and the newest checkpoint.
  int64_t start_step_ = 0;
  double start_epoch_ = 0;
  int64_t last_step_ = 0;
  double last_epoch_ = 0;
};

}  // namespace ftune::train
