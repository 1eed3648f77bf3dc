#include "worker/train/job_runner.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/job_spec.h"
#include "common/path_roots.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"
#include "worker/data/audio_cache.h"
#include "worker/data/dataset.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config.h"
#include "worker/train/checkpoint_manager.h"
#include "worker/train/hf_trainer_files.h"
#include "worker/train/tensorboard.h"
#include "worker/train/trainer.h"
#include "worker/train/trainer_config.h"

namespace ftune::train {
namespace {

// Only what the machine, not the job, can cause may pass on another attempt: out of memory, a
// full disk, I/O errors, a timeout. Everything else (a bad spec, dataset or checkpoint, a
// clip or tensor the model cannot take, corrupt data) the same inputs would hit again.
bool MayPassNextTime(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

JobRunResult FromError(const absl::Status& status) {
  JobRunResult result;
  result.outcome = MayPassNextTime(status) ? ftune::v1::JOB_OUTCOME_RETRY
                                           : ftune::v1::JOB_OUTCOME_FAILED;
  result.error = status.ToString();
  return result;
}

// A folder named like a preset is a folder.
bool IsPreset(const std::string& model) {
  return IsModelPreset(model) && !std::filesystem::is_directory(model);
}

void Warn(EventSink* sink, const std::string& message) {
  ftune::v1::JobEvent event;
  event.mutable_log()->set_level(ftune::v1::LOG_LEVEL_WARNING);
  event.mutable_log()->set_message(message);
  sink->Emit(std::move(event));
}

// The Hub model a checkpoint folder was made from: config.json's _name_or_path when it reads as
// a Hub id (owner/name), "" otherwise (a local path, or none).
std::string HubModelId(const model::HubertConfig& config) {
  static const std::regex kHubId(R"([A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)");
  auto it = config.extra.find("_name_or_path");
  if (it == config.extra.end() || !it->is_string()) return "";
  const std::string id = it->get<std::string>();
  if (!std::regex_match(id, kHubId) || std::filesystem::exists(id)) return "";
  return id;
}

// The job's spec with every default written out, as an indented JSON block of Markdown.
std::string HyperparametersMarkdown(const ftune::v1::JobSpec& spec) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(WithDefaults(spec), &json, options);
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return "    " + absl::StrReplaceAll(json, {{"\n", "\n    "}});
}

// Links inside `dir` (the model folder, the output folder) that lead out of the roots: what
// the job would read or write through them lies elsewhere. PermissionDenied naming the link.
absl::Status CheckLinksStayInRoots(const PathRoots& roots, const std::string& what,
                                   const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (roots.empty() || !fs::is_directory(dir, error)) return absl::OkStatus();
  for (fs::recursive_directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (it->is_symlink(error) && !roots.Allows(it->path().string())) {
      return absl::PermissionDeniedError(
          absl::StrCat(what, " holds ", fs::relative(it->path(), dir, error).string(),
                       ", a link ", data::kOutsideRoots));
    }
  }
  return absl::OkStatus();
}

// The newest complete checkpoint of `output_dir` (the one the trainer resumes from).
std::optional<std::pair<int64_t, std::string>> ResumePoint(const std::string& output_dir) {
  auto all = CheckpointManager::ListComplete(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

class FineTuneRunner : public JobRunner {
 public:
  explicit FineTuneRunner(const RunnerOptions& options) : options_(options) {}

  JobRunResult Run(const ftune::v1::Job& job, const Placement& placement, EventSink* sink,
                   CancelToken* cancel) override {
    auto run = RunOrError(job, placement, sink, cancel);
    JobRunResult result = run.ok() ? *std::move(run) : FromError(run.status());
    const bool ended = result.outcome != ftune::v1::JOB_OUTCOME_REQUEUE &&
                       result.outcome != ftune::v1::JOB_OUTCOME_RETRY;
    if (ended && !options_.audio_cache_dir.empty()) {
      // Decoded audio on disk only speeds up a later attempt of the same job.
      std::error_code ignored;
      std::filesystem::remove_all(AudioCacheDir(job), ignored);
    }
    return result;
  }

 private:
  absl::StatusOr<JobRunResult> RunOrError(const ftune::v1::Job& job, const Placement& placement,
                                          EventSink* sink, CancelToken* cancel) {
    const ftune::v1::JobSpec& spec = job.spec();
    if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
    absl::StatusOr<TrainerConfig> config = ResolveTrainerConfig(spec);
    if (!config.ok()) return config.status();
    if (!placement.device.empty()) config->device = placement.device;
    const int world_size = std::max<int>(1, static_cast<int>(spec.world_size()));
    if (placement.distributed.world_size != world_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("the job asks for world_size ", world_size, ", this run is placed as ",
                       placement.distributed.world_size, " ranks"));
    }
    // Only rank 0 reports and writes; the others train and pass on their warnings.
    const bool lead = placement.distributed.rank == 0;
    if (config->threads == 0) config->threads = options_.default_threads;
    config->loader_threads = options_.loader_threads;
    {
      ASSIGN_OR_RETURN(const PathRoots roots, PathRoots::Create(options_.allowed_roots));
      if (!IsPreset(spec.model())) {
        RETURN_IF_ERROR(CheckLinksStayInRoots(roots, "the model folder", spec.model()));
      }
      RETURN_IF_ERROR(CheckLinksStayInRoots(roots, "output_dir", spec.output_dir()));
    }

    // Hugging Face's output files, made from the events that pass through.
    const bool random_init = IsPreset(spec.model());
    HfTrainerFiles hf({spec, *config, random_init, "", ""}, sink);
    if (lead) {
      ftune::v1::JobEvent event;
      event.mutable_log()->set_level(ftune::v1::LOG_LEVEL_INFO);
      event.mutable_log()->set_message(DescribeRecipe(spec));
      hf.Emit(std::move(event));
    }
    // The checkpoint the trainer will continue from, if any: the logs continue from it too.
    const auto resume = lead ? ResumePoint(spec.output_dir()) : std::nullopt;
    if (resume) {
      if (absl::Status s = hf.ContinueFrom(resume->second); !s.ok()) {
        Warn(&hf, absl::StrCat("the Hugging Face log_history starts afresh: ", s.message()));
      }
    }

    data::AudioCacheOptions cache_options;
    cache_options.max_memory_bytes = static_cast<size_t>(options_.audio_cache_bytes);
    if (!options_.audio_cache_dir.empty()) cache_options.disk_dir = AudioCacheDir(job);
    data::AudioCache audio(cache_options);
    data::DatasetRequest request = data::DatasetRequestFor(spec, config->seed);
    request.allowed_roots = options_.allowed_roots;
    absl::StatusOr<data::Dataset> dataset =
        data::LoadDataset(request, &audio, config->loader_threads);
    if (!dataset.ok()) return dataset.status();
    if (lead) {
      ftune::v1::JobEvent event;
      *event.mutable_dataset_summary() = dataset->summary;
      hf.Emit(std::move(event));
    }
    if (cancel->stop_requested()) return Stopped(cancel->reason());

    absl::StatusOr<model::LoadedModel> loaded =
        model::LoadModel(spec.model(), dataset->labels, config->seed);
    if (!loaded.ok()) return loaded.status();

    TrainerOptions options;
    options.random_init = random_init;
    options.job_id = job.id();
    options.attempt = job.attempt();
    options.feature_cache_bytes = options_.feature_cache_bytes;
    options.distributed = placement.distributed;
    if (options.random_init) {
      hf.set_started_from(absl::StrCat("the ", spec.model(), " preset (random initialisation)"));
    } else {
      hf.set_base_model(HubModelId(loaded->config));
      hf.set_started_from(absl::StrCat("the checkpoint folder ", spec.model()));
    }
    options.write_checkpoint_extras = [&hf](const std::string& dir, int64_t step, double epoch) {
      return hf.WriteCheckpointFiles(dir, step, epoch);
    };

    EventSink* trainer_sink = lead ? static_cast<EventSink*>(&hf) : sink;
    std::unique_ptr<TensorBoardSink> tensorboard;
    if (lead && spec.report_to() == ftune::v1::REPORT_TO_TENSORBOARD) {
      TensorBoardOptions tb;
      tb.run_dir = TensorBoardRunDir(spec.output_dir(), spec.name());
      if (resume) tb.resume_step = resume->first;
      tb.hyperparameters_markdown = HyperparametersMarkdown(spec);
      tb.may_write = [cancel] { return cancel->MayWrite().ok(); };
      absl::StatusOr<std::unique_ptr<TensorBoardSink>> created = TensorBoardSink::Create(tb, &hf);
      if (created.ok()) {
        tensorboard = *std::move(created);
        trainer_sink = tensorboard.get();
      } else {
        Warn(&hf, absl::StrCat("TensorBoard: ", created.status().message(),
                               "; the job goes on without TensorBoard curves"));
      }
    }

    auto trainer = Trainer::Create(*config, *std::move(loaded), *std::move(dataset), &audio,
                                   trainer_sink, cancel, options);
    if (!trainer.ok()) return trainer.status();
    absl::StatusOr<TrainResult> trained = (*trainer)->Run();
    // The curves end with the run, however it ended; a write error was reported as a warning.
    if (tensorboard) (void)tensorboard->Close();
    if (!trained.ok()) return trained.status();
    if (lead &&
        (trained->end == TrainEnd::kCompleted || trained->end == TrainEnd::kEarlyStopped)) {
      RETURN_IF_ERROR(hf.WriteRunResults(trained->seconds));
    }

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

  // One folder per job, removed when the job ends.
  std::string AudioCacheDir(const ftune::v1::Job& job) const {
    return (std::filesystem::path(options_.audio_cache_dir) / job.id()).string();
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
