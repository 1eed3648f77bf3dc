#include "worker/train/job_runner.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "spdlog/spdlog.h"
#include "worker/data/audio_cache.h"
#include "worker/data/dataset.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config.h"
#include "worker/train/trainer.h"
#include "worker/train/trainer_config.h"

namespace ftune::train {
namespace {

// Problems that the same inputs would hit again are final; anything else may pass on
// another attempt (disk full, out of memory, a flaky mount).
bool WouldRepeat(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return true;
    default:
      return false;
  }
}

JobRunResult FromError(const absl::Status& status) {
  JobRunResult result;
  result.outcome = WouldRepeat(status) ? ftune::v1::JOB_OUTCOME_FAILED
                                       : ftune::v1::JOB_OUTCOME_REQUEUE;
  result.error = status.ToString();
  return result;
}

// A folder named like a preset is a folder.
bool IsPreset(const std::string& model) {
  return IsModelPreset(model) && !std::filesystem::is_directory(model);
}

class FineTuneRunner : public JobRunner {
 public:
  explicit FineTuneRunner(const RunnerOptions& options) : options_(options) {}

  JobRunResult Run(const ftune::v1::Job& job, const std::string& device, EventSink* sink,
                   CancelToken* cancel) override {
    auto result = RunOrError(job, device, sink, cancel);
    if (!result.ok()) return FromError(result.status());
    return *std::move(result);
  }

 private:
  absl::StatusOr<JobRunResult> RunOrError(const ftune::v1::Job& job, const std::string& device,
                                          EventSink* sink, CancelToken* cancel) {
    const ftune::v1::JobSpec& spec = job.spec();
    if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
    absl::StatusOr<TrainerConfig> config = ResolveTrainerConfig(spec);
    if (!config.ok()) return config.status();
    {
      ftune::v1::JobEvent event;
      event.mutable_log()->set_level(ftune::v1::LOG_LEVEL_INFO);
      event.mutable_log()->set_message(DescribeRecipe(spec));
      sink->Emit(std::move(event));
    }
    if (!device.empty()) config->device = device;
    if (config->threads == 0) config->threads = options_.default_threads;
    config->loader_threads = options_.loader_threads;

    data::AudioCache audio;
    absl::StatusOr<data::Dataset> dataset = data::LoadDataset(
        data::DatasetRequestFor(spec, config->seed), &audio, config->loader_threads);
    if (!dataset.ok()) return dataset.status();
    {
      ftune::v1::JobEvent event;
      *event.mutable_dataset_summary() = dataset->summary;
      sink->Emit(std::move(event));
    }
    if (cancel->stop_requested()) return Stopped(cancel->reason());

    absl::StatusOr<model::LoadedModel> loaded =
        model::LoadModel(spec.model(), dataset->labels, config->seed);
    if (!loaded.ok()) return loaded.status();

    TrainerOptions options;
    options.random_init = IsPreset(spec.model());
    auto trainer = Trainer::Create(*config, *std::move(loaded), *std::move(dataset), &audio,
                                   sink, cancel, options);
    if (!trainer.ok()) return trainer.status();
    absl::StatusOr<TrainResult> trained = (*trainer)->Run();
    if (!trained.ok()) return trained.status();

    JobRunResult result;
    switch (trained->end) {
      case TrainEnd::kCompleted:
      case TrainEnd::kEarlyStopped:
        result.outcome = ftune::v1::JOB_OUTCOME_SUCCEEDED;
        break;
      case TrainEnd::kCancelled:
        result.outcome = ftune::v1::JOB_OUTCOME_CANCELLED;
        result.error = "cancelled";
        break;
      case TrainEnd::kHandedBack:
      case TrainEnd::kLeaseLost:
        result.outcome = ftune::v1::JOB_OUTCOME_REQUEUE;
        result.error = TrainEndName(trained->end);
        break;
    }
    result.best_checkpoint = trained->best_checkpoint;
    result.last_checkpoint = trained->last_checkpoint;
    result.best_metric_name = trained->best_metric_name;
    result.best_metric = trained->best_metric;
    return result;
  }

  static JobRunResult Stopped(StopReason reason) {
    JobRunResult result;
    result.outcome = reason == StopReason::kCancel ? ftune::v1::JOB_OUTCOME_CANCELLED
                                                   : ftune::v1::JOB_OUTCOME_REQUEUE;
    result.error = reason == StopReason::kCancel ? "cancelled before training" : "stopped";
    return result;
  }

  RunnerOptions options_;
};

}  // namespace

std::unique_ptr<JobRunner> MakeFineTuneRunner(const RunnerOptions& options) {
  return std::make_unique<FineTuneRunner>(options);
}

}  // namespace ftune::train
