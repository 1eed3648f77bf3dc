#include "worker/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "ATen/CPUGeneratorImpl.h"
#include "ATen/autocast_mode.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "torch/torch.h"
#include "worker/data/batch_loader.h"
#include "worker/data/random.h"
#include "worker/model/device.h"
#include "worker/model/generator.h"
#include "worker/model/safetensors.h"
#include "worker/train/checkpoint_manager.h"
#include "worker/train/evaluation.h"
#include "worker/train/feature_cache.h"
#include "worker/train/loss_scaler.h"
#include "worker/train/optimizer.h"
#include "worker/train/lr_schedule.h"
#include "worker/train/metrics.h"
#include "worker/train/precision.h"
#include "worker/train/run_state.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kOptimizerFile[] = "optimizer.pt";
constexpr char kRngFile[] = "rng.pt";
constexpr char kCudaRngFile[] = "rng_cuda.pt";
// Ranks other than 0 draw dropout masks from their own stream of the job's seed.
constexpr uint64_t kRankSeedSalt = 0x72616e6b;  // "rank"

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The autocast dtype of a run (kFloat: none).
at::ScalarType AutocastType(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::kBf16:
      return at::kBFloat16;
    case ComputeDtype::kFp16:
      return at::kHalf;
    case ComputeDtype::kFp32:
      break;
  }
  return at::kFloat;
}

bool Improves(BestMetric metric, double value, double reference, double margin) {
  return metric == BestMetric::kEvalLoss ? value < reference - margin
                                         : value > reference + margin;
}

ftune::v1::JobEvent LogEvent(ftune::v1::LogLevel level, const std::string& message) {
  ftune::v1::JobEvent event;
  event.mutable_log()->set_level(level);
  event.mutable_log()->set_message(message);
  return event;
}

absl::StatusOr<nlohmann::json> ReadJson(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", e.what()));
  }
}

}  // namespace

const char* TrainEndName(TrainEnd end) {
  switch (end) {
    case TrainEnd::kCompleted:
      return "completed";
    case TrainEnd::kEarlyStopped:
      return "early_stopped";
    case TrainEnd::kCancelled:
      return "cancelled";
    case TrainEnd::kHandedBack:
      return "handed_back";
    case TrainEnd::kLeaseLost:
      return "lease_lost";
  }
  return "completed";
}

struct Trainer::State {
  TrainerConfig config;
  TrainerOptions options;
  model::LoadedModel loaded;
  data::Dataset dataset;
  data::AudioCache* cache = nullptr;
  EventSink* sink = nullptr;
  CancelToken* cancel = nullptr;

  torch::Device device{torch::kCPU};
  // The job's own: another job training on this worker at the same time draws from its own.
  at::Generator generator;
  PrecisionChoice precision;
  bool cnn_frozen = false;
  bool cache_train_features = false;
  bool cache_eval_features = false;
  std::vector<torch::Tensor> params;  // trainable only
  std::unique_ptr<FusedAdamW> optimizer;
  std::optional<LrSchedule> schedule;
  DynamicLossScaler scaler{LossScalerOptions{.enabled = false}};
  std::unique_ptr<CheckpointManager> checkpoints;  // rank 0 only
  FeatureCache train_features{0}, eval_features{0};

  // Data-parallel (world_size > 1): this rank's membership, its gradient sync, its share of
  // the evaluation clips, and the stop request every rank agreed on after the last step.
  std::unique_ptr<Collective> collective;
  std::unique_ptr<GradientSync> gradient_sync;
  int rank = 0;
  int world_size = 1;
  std::vector<data::Clip> eval_clips;
  StopReason agreed_stop = StopReason::kNone;

  int64_t batches_per_epoch = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;

  // Where the run is (its loss scale lives in `scaler` until saved).
  RunState run;
  std::string last_checkpoint;
  std::string best_checkpoint;
  int64_t last_saved_step = -1;

  // Progress reporting.
  Clock::time_point run_start;
  Clock::time_point log_start;
  int64_t steps_at_start = 0;
  double loss_since_log = 0;
  int64_t steps_since_log = 0;
  int64_t samples_since_log = 0;
  double last_lr = 0;
  double last_grad_norm = 0;

  model::HubertForSequenceClassification& model() { return loaded.model; }
  void Emit(ftune::v1::JobEvent event) {
    if (rank != 0) {
      // Rank 0 speaks for the run; the others add only what went wrong on them.
      if (!event.has_log() || event.log().level() < ftune::v1::LOG_LEVEL_WARNING) return;
      event.mutable_log()->set_message(absl::StrCat("rank ", rank, ": ", event.log().message()));
    }
    sink->Emit(std::move(event));
  }

  // Why the run must stop: this process's request alone, or, across ranks, the one they all
  // agreed on after the last step (so that every rank stops at the same step).
  StopReason StopNow() const { return collective ? agreed_stop : cancel->reason(); }
  void Log(ftune::v1::LogLevel level, const std::string& message) {
    Emit(LogEvent(level, message));
  }

  // Clips of global batch `batch` (all ranks' slices together).
  int64_t TrainBatchSize(int64_t batch) const {
    const int64_t n = static_cast<int64_t>(dataset.train.size());
    const int64_t global = int64_t{config.batch_size} * world_size;
    return std::min<int64_t>(global, n - batch * global);
  }

  // Logits of one batch. With a feature cache, each clip's feature-encoder output is computed
  // alone at its own length (so it does not depend on the batch it lands in) and reused.
  torch::Tensor Logits(const data::Batch& batch, FeatureCache* features) {
    torch::Tensor audio = batch.audio.to(device);
    torch::Tensor lengths = batch.lengths.to(device);
    model::AutocastGuard autocast(device, AutocastType(precision.dtype));
    if (features == nullptr) return model()->forward(audio, lengths);
    std::vector<torch::Tensor> per_clip;
    per_clip.reserve(batch.clip_indices.size());
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < batch.clip_indices.size(); ++i) {
        const int64_t clip = batch.clip_indices[i];
        std::optional<torch::Tensor> f = features->Get(clip, device);
        if (!f) {
          const int64_t n = batch.lengths[i].item<int64_t>();
          f = model()->extract_features(audio[i].slice(0, 0, n).unsqueeze(0)).squeeze(0);
          features->Put(clip, *f);
        }
        per_clip.push_back(*std::move(f));
      }
    }
    torch::Tensor padded = torch::nn::utils::rnn::pad_sequence(per_clip, /*batch_first=*/true);
    return model()->forward_features(padded, lengths);
  }

  // Forward and backward of one micro-batch whose loss counts `weight` of its window.
  double ForwardBackward(const data::Batch& batch, double weight, FeatureCache* features) {
    torch::Tensor logits = Logits(batch, features);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat),
                                                              batch.labels.to(device));
    scaler.Scale(loss * weight).backward();
    return loss.item<double>();
  }

  // Gradients are dropped rather than zeroed: the first backward of a window then hands its
  // fresh gradient tensors to the parameters instead of adding them to zeros.
  void ClearGradients() {
    for (torch::Tensor& p : params) p.mutable_grad().reset();
  }

  // Unscale, check, clip, step (or skip), advance the schedule.
  StepResult OptimizerStep() {
    const double lr = schedule->LrAt(run.step);
    for (auto& group : optimizer->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    const StepResult result = ScaledClippedStep(*optimizer, params, scaler, config.max_grad_norm);
    if (!result.taken) ++run.skipped_steps;
    ++run.step;
    last_lr = lr;
    last_grad_norm = result.grad_norm;
    return result;
  }

  // One optimizer step over an accumulation window of `micro_batches` batches holding
  // `window_samples` clips (on all ranks together), pulled in order from `next`. Each
  // micro-batch's loss is weighted by its share of the window's samples, so any split of the
  // same clips, across micro-batches or ranks, gives the same gradient (also for an epoch's
  // last, shorter window); summing the ranks' gradients then gives the window's.
  absl::StatusOr<Trainer::StepStats> Step(
      int64_t micro_batches, int64_t window_samples,
      const std::function<absl::StatusOr<data::Batch>()>& next, FeatureCache* features,
      const std::vector<data::Clip>* clips) {
    ClearGradients();
    Trainer::StepStats stats;
    int64_t samples = 0;
    for (int64_t i = 0; i < micro_batches; ++i) {
      ASSIGN_OR_RETURN(data::Batch batch, next());
      const int64_t n = batch.labels.size(0);
      // Gradients are summed across ranks during the window's last backward only.
      if (gradient_sync && i == micro_batches - 1) gradient_sync->Arm();
      if (n == 0) continue;  // this rank's slice of a short last batch
      const double weight = static_cast<double>(n) / static_cast<double>(window_samples);
      try {
        stats.loss += ForwardBackward(batch, weight, features) * weight;
      } catch (const c10::Error& e) {
        if (clips == nullptr) throw;
        return ClipError("training", batch, *clips, e);
      }
      samples += n;
    }
    if (gradient_sync) gradient_sync->Finish();
    const StepResult result = OptimizerStep();
    stats.grad_norm = result.grad_norm;
    stats.taken = result.taken;
    if (collective) AgreeAfterStep(&stats, &samples);
    samples_since_log += samples;
    return stats;
  }

  // One small all-reduce after each step: the window's loss and clip count over all ranks,
  // and the stop requests, so every rank stops at the same step and for the same reason (a
  // lost lease anywhere ends the run before a cancel does, and a cancel before a hand-back).
  void AgreeAfterStep(Trainer::StepStats* stats, int64_t* samples) {
    const StopReason own = cancel->reason();
    torch::Tensor t = torch::tensor(
        {stats->loss, static_cast<double>(*samples),
         own == StopReason::kHandBack ? 1.0 : 0.0, own == StopReason::kCancel ? 1.0 : 0.0,
         own == StopReason::kLeaseLost ? 1.0 : 0.0},
        torch::kDouble);
    collective->AllReduceSum(t);
    const double* v = t.data_ptr<double>();
    stats->loss = v[0];
    *samples = static_cast<int64_t>(std::llround(v[1]));
    agreed_stop = v[4] > 0   ? StopReason::kLeaseLost
                  : v[3] > 0 ? StopReason::kCancel
                  : v[2] > 0 ? StopReason::kHandBack
                             : StopReason::kNone;
  }

  // Fractional position in the run: 1.5 = half way through epoch 2.
  double EpochPosition() const {
    return std::min<double>(config.epochs,
                            static_cast<double>(run.step) / std::max<int64_t>(1, steps_per_epoch));
  }

  void EmitProgress(int epoch_1based) {
    ftune::v1::JobEvent event;
    ftune::v1::TrainProgress* p = event.mutable_train_progress();
    p->set_epoch(static_cast<uint32_t>(epoch_1based));
    p->set_epoch_progress(EpochPosition());
    p->set_step(run.step);
    p->set_total_steps(total_steps);
    p->set_loss(steps_since_log > 0 ? loss_since_log / steps_since_log : 0.0);
    p->set_learning_rate(last_lr);
    p->set_grad_norm(last_grad_norm);
    p->set_loss_scale(scaler.scale());
    p->set_skipped_steps(run.skipped_steps);
    const double window = Seconds(log_start);
    p->set_samples_per_sec(window > 0 ? samples_since_log / window : 0.0);
    const double elapsed = Seconds(run_start);
    p->set_elapsed_seconds(elapsed);
    const int64_t done = run.step - steps_at_start;
    p->set_eta_seconds(done > 0 ? elapsed / done * static_cast<double>(total_steps - run.step) : 0.0);
    Emit(std::move(event));
    loss_since_log = 0;
    steps_since_log = 0;
    samples_since_log = 0;
    log_start = Clock::now();
  }

  struct EvalOutcome {
    bool is_best = false;
    bool stop_early = false;
    bool interrupted = false;  // a stop was requested mid-evaluation: no result
  };

  absl::StatusOr<EvalOutcome> Evaluate(int epoch_1based) {
    const Clock::time_point start = Clock::now();
    EvaluationInputs in;
    in.clips = &eval_clips;
    in.cache = cache;
    in.loader.batch_size = config.batch_size;
    in.loader.seed = config.seed;
    in.loader.max_seconds = config.max_seconds;
    in.loader.normalize = loaded.preprocessor.do_normalize;
    in.loader.threads = config.loader_threads > 0 ? config.loader_threads : 2;
    in.num_labels = static_cast<int>(dataset.labels.size());
    in.logits = [this](const data::Batch& batch) {
      return Logits(batch, cache_eval_features ? &eval_features : nullptr).to(torch::kFloat);
    };
    // Ranks evaluate together to the end: a stop waits for the step after.
    if (!collective) in.stop = [this] { return cancel->stop_requested(); };
    in.collective = collective.get();
    model()->eval();
    absl::StatusOr<EvaluationPass> pass = train::Evaluate(in);
    model()->train();
    if (!pass.ok()) return pass.status();
    if (pass->interrupted) return EvalOutcome{.interrupted = true};
    const ClassificationMetrics& m = pass->metrics;
    const double loss = pass->loss;
    double value = m.accuracy;
    if (config.metric_for_best == BestMetric::kMacroF1) value = m.macro_f1;
    if (config.metric_for_best == BestMetric::kEvalLoss) value = loss;

    EvalOutcome outcome;
    outcome.is_best = !run.has_best || Improves(config.metric_for_best, value, run.best_metric, 0.0);
    const bool improved = !run.has_best || Improves(config.metric_for_best, value, run.best_metric,
                                                config.early_stopping_threshold);
    run.evals_without_improvement = improved ? 0 : run.evals_without_improvement + 1;
    if (outcome.is_best) {
      run.has_best = true;
      run.best_metric = value;
      run.best_accuracy = m.accuracy;
      run.best_step = run.step;
    }
    run.last_accuracy = m.accuracy;
    outcome.stop_early = config.early_stopping_patience > 0 &&
                         run.evals_without_improvement >= config.early_stopping_patience;

    ftune::v1::JobEvent event;
    ftune::v1::EvalResult* r = event.mutable_eval_result();
    r->set_epoch(static_cast<uint32_t>(epoch_1based));
    r->set_epoch_progress(EpochPosition());
    r->set_step(run.step);
    r->set_loss(loss);
    r->set_accuracy(m.accuracy);
    r->set_macro_f1(m.macro_f1);
    for (const std::string& label : dataset.labels) r->add_labels(label);
    for (double recall : m.per_class_recall) r->add_per_class_recall(recall);
    for (uint32_t c : m.confusion) r->add_confusion(c);
    r->set_num_samples(static_cast<uint32_t>(m.num_samples));
    r->set_is_best(outcome.is_best);
    r->set_seconds(Seconds(start));
    Emit(std::move(event));
    return outcome;
  }

  // Generators a checkpoint carries: the job's own CPU one (CPU dropout and SpecAugment masks,
  // LayerDrop) and, when training on a GPU, that device's (its dropout), each in its own
  // file. Shuffling and cropping derive from the seed and the position alone.
  std::vector<std::pair<std::string, at::Generator>> CheckpointedGenerators() const {
    std::vector<std::pair<std::string, at::Generator>> generators;
    generators.emplace_back(kRngFile, generator);
    if (device.is_cuda()) {
      generators.emplace_back(kCudaRngFile, at::globalContext().defaultGenerator(device));
    }
    return generators;
  }

  // What fixes a run's trajectory. Resuming needs every one of them unchanged, or the resumed
  // run would not be the interrupted one (and an output folder reused by a different job
  // would silently continue the old one). Precision is not among them: a job may move between
  // a GPU worker (fp16) and a CPU one (bf16).
  nlohmann::json RunIdentity() const {
    return {
        {"seed", config.seed},
        {"batch_size", config.batch_size},
        {"grad_accum", config.grad_accum},
        {"train_clips", dataset.train.size()},
        {"labels", dataset.labels},
        {"total_steps", total_steps},
        {"learning_rate", config.learning_rate},
        {"adam_beta1", config.adam_beta1},
        {"adam_beta2", config.adam_beta2},
        {"adam_epsilon", config.adam_epsilon},
        {"weight_decay", config.weight_decay},
        {"max_grad_norm", config.max_grad_norm},
        {"schedule", static_cast<int>(config.schedule)},
        {"warmup_steps", WarmupSteps(config, total_steps)},
        {"feature_encoder_frozen", cnn_frozen},
        {"freeze_layers", config.freeze_layers},
        {"freeze_backbone", config.freeze_backbone},
        {"max_seconds", config.max_seconds},
        {"group_by_length", config.group_by_length},
        {"world_size", world_size},
    };
  }

  nlohmann::json TrainerStateJson() const {
    RunState state = run;
    state.loss_scaler = scaler.state();
    return RunStateJson(state, {RunIdentity(), ComputeDtypeName(precision.dtype),
                                BestMetricName(config.metric_for_best), total_steps});
  }

  absl::Status WriteCheckpoint(const std::string& dir) {
    RETURN_IF_ERROR(model::SaveModelFolder(model(), loaded.preprocessor, dir));
    const fs::path state_dir = fs::path(dir) / kTrainingStateDir;
    std::error_code ec;
    // Not create_directories: if another attempt cleared this scratch folder meanwhile, the
    // write fails instead of recreating it.
    fs::create_directory(state_dir, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot create ", state_dir.string(), ": ", ec.message()));
    }
    torch::save(*optimizer, (state_dir / kOptimizerFile).string());
    for (auto& [file, generator] : CheckpointedGenerators()) {
      torch::Tensor rng;
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        rng = generator.get_state();
      }
      torch::save(rng, (state_dir / file).string());
    }
    // Last: its presence marks the checkpoint complete.
    std::ofstream out(state_dir / kTrainerStateFile);
    out << TrainerStateJson().dump(2) << "\n";
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", kTrainerStateFile));
    return absl::OkStatus();
  }

  absl::Status SaveCheckpoint(bool is_best) {
    if (rank != 0) return absl::OkStatus();  // rank 0 holds the same weights and writes them
    if (last_saved_step != run.step) {
      ASSIGN_OR_RETURN(last_checkpoint, checkpoints->Save(run.step, [this](const std::string& dir) {
        RETURN_IF_ERROR(WriteCheckpoint(dir));
        if (!options.write_checkpoint_extras) return absl::OkStatus();
        return options.write_checkpoint_extras(dir, run.step, EpochPosition());
      }));
      last_saved_step = run.step;
    }
    if (is_best) {
      ASSIGN_OR_RETURN(best_checkpoint, checkpoints->MarkBest(last_checkpoint));
    }
    ftune::v1::JobEvent event;
    ftune::v1::CheckpointSaved* c = event.mutable_checkpoint_saved();
    c->set_path(last_checkpoint);
    c->set_epoch(static_cast<uint32_t>(run.epoch + (run.batch_in_epoch > 0 ? 1 : 0)));
    c->set_step(run.step);
    c->set_is_best(is_best);
    c->set_metric_name(BestMetricName(config.metric_for_best));
    c->set_metric_value(run.best_metric);
    Emit(std::move(event));
    return absl::OkStatus();
  }

  // Continues from a saved (or rank 0's) state, once it is known to be this run's and to fit
  // this dataset.
  absl::Status ApplyTrainerState(const nlohmann::json& st, const RunStateSource& source) {
    ASSIGN_OR_RETURN(RunState state, ParseRunState(st, RunIdentity(), source));
    if (state.batch_in_epoch < 0 || state.batch_in_epoch >= batches_per_epoch ||
        state.epoch < 0 || state.step < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          source.name, ": position epoch ", state.epoch, " batch ", state.batch_in_epoch,
          " does not fit this dataset (", batches_per_epoch, " batches/epoch)"));
    }
    RETURN_IF_ERROR(scaler.Restore(state.loss_scaler));
    run = state;
    return absl::OkStatus();
  }

  absl::Status Restore(const std::string& dir) {
    ASSIGN_OR_RETURN(nlohmann::json st, ReadJson(fs::path(dir) / kTrainingStateDir /
                                                 kTrainerStateFile));
    RETURN_IF_ERROR(ApplyTrainerState(
        st, {dir, absl::StrCat(dir, "/", kTrainingStateDir, "/", kTrainerStateFile)}));
    ASSIGN_OR_RETURN(auto tensors,
                     model::ReadSafetensors((fs::path(dir) / "model.safetensors").string()));
    RETURN_IF_ERROR(model::LoadStateDict(model(), std::move(tensors), {}, nullptr));
    const fs::path state_dir = fs::path(dir) / kTrainingStateDir;
    try {
      torch::load(*optimizer, (state_dir / kOptimizerFile).string(), device);
      for (auto& [file, generator] : CheckpointedGenerators()) {
        // A checkpoint written on another kind of device lacks this device's generator state;
        // the run continues from the current one (only dropout masks on that device differ).
        if (file != kRngFile && !fs::exists(state_dir / file)) {
          Log(ftune::v1::LOG_LEVEL_WARNING,
              absl::StrCat(dir, " has no ", file, ": dropout on ", device.str(),
                           " will not repeat the interrupted run exactly"));
          continue;
        }
        torch::Tensor rng;
        torch::load(rng, (state_dir / file).string());
        std::lock_guard<std::mutex> lock(generator.mutex());
        generator.set_state(rng);
      }
    } catch (const c10::Error& e) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, ": cannot restore optimizer/RNG state: ", e.what_without_backtrace()));
    }
    last_checkpoint = dir;
    last_saved_step = run.step;
    const std::string best_dir = checkpoints->best_dir();
    if (CheckpointManager::IsComplete(best_dir)) best_checkpoint = best_dir;
    return absl::OkStatus();
  }

  // Every rank continues from rank 0's state: its position and counters (refused when a rank's
  // run differs, e.g. another dataset on that machine), its weights (initial or resumed) and,
  // after a resume, its optimizer moments. Other ranks then draw their own dropout masks.
  absl::Status SyncFromRankZero() {
    const std::string state =
        collective->BroadcastBytes(rank == 0 ? TrainerStateJson().dump() : std::string());
    if (rank != 0) {
      nlohmann::json st;
      try {
        st = nlohmann::json::parse(state);
      } catch (const nlohmann::json::exception& e) {
        return absl::InternalError(absl::StrCat("rank 0's trainer state: ", e.what()));
      }
      RETURN_IF_ERROR(ApplyTrainerState(st, {"rank 0", "rank 0's trainer state", rank}));
    }
    std::vector<torch::Tensor> tensors;
    for (const torch::Tensor& p : model()->parameters()) tensors.push_back(p.data());
    for (const torch::Tensor& b : model()->buffers()) tensors.push_back(b);
    collective->Broadcast(tensors);
    std::string moments;
    if (rank == 0 && run.step > 0) {
      std::ostringstream out;
      torch::save(*optimizer, out);
      moments = out.str();
    }
    moments = collective->BroadcastBytes(moments);
    if (rank != 0 && !moments.empty()) {
      std::istringstream in(moments);
      torch::load(*optimizer, in, device);
    }
    if (rank != 0) {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_current_seed(data::DeriveSeed(config.seed, kRankSeedSalt,
                                                  static_cast<uint64_t>(rank),
                                                  static_cast<uint64_t>(run.step)));
    }
    return absl::OkStatus();
  }

  // One epoch from the current position; returns why training must stop, if it must.
  absl::StatusOr<std::optional<TrainEnd>> TrainEpoch() {
    data::LoaderOptions lo;
    lo.batch_size = config.batch_size;
    lo.shuffle = true;
    lo.seed = config.seed;
    lo.epoch = run.epoch;
    lo.max_seconds = config.max_seconds;
    lo.random_crop = config.max_seconds > 0;
    lo.group_by_length = config.group_by_length;
    lo.normalize = loaded.preprocessor.do_normalize;
    lo.threads = config.loader_threads > 0 ? config.loader_threads : 2;
    lo.start_batch = run.batch_in_epoch;
    lo.shard_rank = rank;
    lo.shard_count = world_size;
    data::BatchLoader loader(dataset.train, cache, lo);
    const int64_t nb = loader.num_batches();
    FeatureCache* features = cache_train_features ? &train_features : nullptr;
    model()->train();
    const int accum = config.grad_accum;
    while (run.batch_in_epoch < nb) {
      // The window of micro-batches that makes this optimizer step.
      const int64_t window_end = std::min<int64_t>(nb, (run.batch_in_epoch / accum + 1) * accum);
      int64_t window_samples = 0;
      for (int64_t b = run.batch_in_epoch; b < window_end; ++b) window_samples += TrainBatchSize(b);
      auto next = [&]() -> absl::StatusOr<data::Batch> {
        ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
        if (!batch) return absl::InternalError("batch loader ended before its last batch");
        ++run.batch_in_epoch;
        return *std::move(batch);
      };
      ASSIGN_OR_RETURN(Trainer::StepStats stats, Step(window_end - run.batch_in_epoch, window_samples,
                                                      next, features, &dataset.train));
      loss_since_log += stats.loss;
      ++steps_since_log;
      const bool epoch_done = run.batch_in_epoch == nb;
      const int epoch_1based = run.epoch + 1;
      if (epoch_done) {
        ++run.epoch;
        run.batch_in_epoch = 0;
      }
      if (run.step % config.log_every_steps == 0 || run.step == total_steps) EmitProgress(epoch_1based);
      ASSIGN_OR_RETURN(std::optional<TrainEnd> stop, Fenced(AfterStep(epoch_done, epoch_1based)));
      if (stop) return stop;
      if (epoch_done) break;
    }
    return std::optional<TrainEnd>();
  }

  // Evaluation, checkpoints and stop requests after an optimizer step; why training must stop,
  // if it must.
  absl::StatusOr<std::optional<TrainEnd>> AfterStep(bool epoch_done, int epoch_1based) {
    // Another worker may own the job now: evaluate nothing, write nothing.
    if (StopNow() == StopReason::kLeaseLost) return TrainEnd::kLeaseLost;
    EvalOutcome eval;
    bool evaluated = false;
    if ((config.eval_every_steps > 0 && run.step % config.eval_every_steps == 0) ||
        (config.eval_every_steps == 0 && epoch_done)) {
      ASSIGN_OR_RETURN(eval, Evaluate(epoch_1based));
      evaluated = !eval.interrupted;
    }
    const bool scheduled_save =
        (config.checkpoint_every_steps > 0 && run.step % config.checkpoint_every_steps == 0) ||
        (config.checkpoint_every_steps == 0 && epoch_done);
    if (scheduled_save || (evaluated && eval.is_best)) {
      RETURN_IF_ERROR(SaveCheckpoint(evaluated && eval.is_best));
    }
    if (evaluated && eval.stop_early) {
      RETURN_IF_ERROR(SaveCheckpoint(false));
      Log(ftune::v1::LOG_LEVEL_INFO,
          absl::StrCat("early stopping: ", run.evals_without_improvement,
                       " evaluations without improvement of ",
                       BestMetricName(config.metric_for_best)));
      return TrainEnd::kEarlyStopped;
    }
    switch (StopNow()) {
      case StopReason::kNone:
        break;
      case StopReason::kLeaseLost:
        return TrainEnd::kLeaseLost;
      case StopReason::kCancel:
        RETURN_IF_ERROR(SaveCheckpoint(false));
        return TrainEnd::kCancelled;
      case StopReason::kHandBack:
        RETURN_IF_ERROR(SaveCheckpoint(false));
        return TrainEnd::kHandedBack;
    }
    return std::optional<TrainEnd>();
  }

  // A write refused because the lease is gone (CancelToken::MayWrite) ends the run as
  // kLeaseLost instead of failing the job.
  absl::StatusOr<std::optional<TrainEnd>> Fenced(absl::StatusOr<std::optional<TrainEnd>> result) {
    if (!result.ok() && cancel->reason() == StopReason::kLeaseLost) return TrainEnd::kLeaseLost;
    return result;
  }
};

Trainer::Trainer(std::unique_ptr<State> state) : s_(std::move(state)) {}
Trainer::~Trainer() = default;

model::HubertForSequenceClassification& Trainer::model() { return s_->model(); }

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    const TrainerConfig& config, model::LoadedModel loaded, data::Dataset dataset,
    data::AudioCache* cache, EventSink* sink, CancelToken* cancel,
    const TrainerOptions& options) {
  if (!loaded.model) return absl::InvalidArgumentError("no model");
  if (dataset.train.empty()) return absl::FailedPreconditionError("the training split is empty");
  if (config.epochs < 1 || config.batch_size < 1 || config.grad_accum < 1) {
    return absl::InvalidArgumentError("epochs, batch_size and grad_accum must be >= 1");
  }
  if (static_cast<int>(dataset.labels.size()) != loaded.config.num_labels()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model has ", loaded.config.num_labels(), " labels, the dataset ",
                     dataset.labels.size()));
  }
  if (config.freeze_layers > loaded.config.num_hidden_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.freeze_layers: ", config.freeze_layers, " exceeds the model's ",
                     loaded.config.num_hidden_layers, " layers"));
  }
  auto s = std::make_unique<State>();
  s->config = config;
  s->options = options;
  s->loaded = std::move(loaded);
  s->dataset = std::move(dataset);
  s->cache = cache;
  s->sink = sink;
  s->cancel = cancel;
  try {
    ASSIGN_OR_RETURN(s->device, model::ParseDevice(config.device));
    // bf16 on CUDA is left to libtorch to accept or refuse for the device at hand.
    ASSIGN_OR_RETURN(s->precision, ChoosePrecision(config.precision, s->device.is_cuda(),
                                                   HostCpuFeatures(), /*cuda_bf16=*/true));
    // On the thread that trains (0 = all cores).
    model::SetIntraOpThreads(config.threads);
    const DistributedOptions& dist = options.distributed;
    if (dist.distributed()) {
      s->rank = dist.rank;
      s->world_size = dist.world_size;
    }
    s->generator = model::MakeCpuGenerator(
        s->rank == 0 ? config.seed
                     : data::DeriveSeed(config.seed, kRankSeedSalt,
                                        static_cast<uint64_t>(s->rank)));

    for (const std::string& note : s->loaded.notes) s->Log(ftune::v1::LOG_LEVEL_INFO, note);
    s->Log(ftune::v1::LOG_LEVEL_INFO,
           absl::StrCat("device ", s->device.str(), ", ", at::get_num_threads(),
                        " threads, precision ", s->precision.reason));

    // Freezing.
    auto& m = s->model();
    bool freeze_cnn = config.freeze_feature_encoder_set ? config.freeze_feature_encoder
                                                        : !options.random_init;
    if (!config.freeze_feature_encoder_set && options.random_init) {
      s->Log(ftune::v1::LOG_LEVEL_INFO,
             "random-init preset: the feature encoder is trainable by default "
             "(--freeze-feature-encoder true freezes it)");
    }
    if (config.freeze_backbone) {
      m->freeze_backbone();
    } else if (config.freeze_layers > 0) {
      m->freeze_backbone_layers(config.freeze_layers);
    }
    if (freeze_cnn) m->freeze_feature_encoder();
    bool cnn_frozen = true;
    for (const auto& p : m->hubert->feature_extractor->parameters()) {
      if (p.requires_grad()) cnn_frozen = false;
    }
    m->to(s->device);
    m->train();

    // AdamW with two groups: no weight decay on biases and LayerNorm weights (as HF).
    std::vector<torch::Tensor> decay, no_decay;
    std::set<const void*> layer_norm_params;
    for (const auto& module : m->modules(/*include_self=*/true)) {
      if (module->as<torch::nn::LayerNorm>() == nullptr) continue;
      for (const auto& p : module->parameters(/*recurse=*/false)) {
        layer_norm_params.insert(p.unsafeGetTensorImpl());
      }
    }
    int64_t trainable = 0;
    for (const auto& item : m->named_parameters()) {
      const torch::Tensor& p = item.value();
      if (!p.requires_grad()) continue;
      trainable += p.numel();
      s->params.push_back(p);
      const std::string& name = item.key();
      const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
      if (is_bias || layer_norm_params.count(p.unsafeGetTensorImpl())) {
        no_decay.push_back(p);
      } else {
        decay.push_back(p);
      }
    }
    if (s->params.empty()) return absl::InvalidArgumentError("every parameter is frozen");
    auto adam = torch::optim::AdamWOptions(config.learning_rate)
                    .betas({config.adam_beta1, config.adam_beta2})
                    .eps(config.adam_epsilon)
                    .weight_decay(config.weight_decay)
                    .amsgrad(false);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    if (!decay.empty()) {
      groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adam));
    }
    if (!no_decay.empty()) {
      auto opts = std::make_unique<torch::optim::AdamWOptions>(adam);
      opts->weight_decay(0.0);
      groups.emplace_back(no_decay, std::move(opts));
    }
    s->optimizer = std::make_unique<FusedAdamW>(groups, adam);

    s->scaler = DynamicLossScaler(LossScalerOptions{.enabled = s->precision.loss_scaling});

    const int64_t n = static_cast<int64_t>(s->dataset.train.size());
    const int64_t global_batch = int64_t{config.batch_size} * s->world_size;
    s->batches_per_epoch = (n + global_batch - 1) / global_batch;
    s->steps_per_epoch = StepsPerEpoch(s->batches_per_epoch, config.grad_accum);
    s->total_steps = s->steps_per_epoch * config.epochs;
    ASSIGN_OR_RETURN(LrSchedule schedule,
                     LrSchedule::Create(config.schedule, config.learning_rate,
                                        WarmupSteps(config, s->total_steps), s->total_steps));
    s->schedule.emplace(schedule);
    if (config.log_every_steps < 1) s->config.log_every_steps = 1;

    s->cnn_frozen = cnn_frozen;
    s->cache_train_features = options.cache_features && cnn_frozen && config.max_seconds <= 0;
    s->cache_eval_features = options.cache_features && cnn_frozen;
    // One budget for the job, shared in proportion to the clips each split holds.
    const double train_share =
        static_cast<double>(s->dataset.train.size()) /
        static_cast<double>(std::max<size_t>(1, s->dataset.train.size() + s->dataset.eval.size()));
    s->train_features = FeatureCache(
        static_cast<int64_t>(static_cast<double>(options.feature_cache_bytes) * train_share));
    s->eval_features = FeatureCache(options.feature_cache_bytes - s->train_features.max_bytes());
    s->Log(ftune::v1::LOG_LEVEL_INFO,
           absl::StrCat(trainable, " trainable parameters; feature encoder ",
                        cnn_frozen ? "frozen" : "trainable",
                        s->cache_train_features ? " (its output is computed once and reused)"
                                                : ""));
    // Evaluation clips are dealt out to ranks in turn; one rank evaluates them all.
    for (size_t i = 0; i < s->dataset.eval.size(); ++i) {
      if (static_cast<int>(i % s->world_size) == s->rank) {
        s->eval_clips.push_back(s->dataset.eval[i]);
      }
    }
    if (s->rank == 0) {
      CheckpointManagerOptions checkpoint_options;
      checkpoint_options.keep_last = config.keep_last;
      checkpoint_options.job = options.job_id;
      checkpoint_options.attempt = options.attempt;
      checkpoint_options.may_write = [cancel] { return cancel->MayWrite(); };
      ASSIGN_OR_RETURN(s->checkpoints, CheckpointManager::Create(config.output_dir,
                                                                 std::move(checkpoint_options)));
    }
    if (dist.distributed()) {
      ASSIGN_OR_RETURN(const std::string backend, BackendFor(s->device));
      s->Log(ftune::v1::LOG_LEVEL_INFO,
             absl::StrCat("data-parallel: ", dist.world_size, " ranks over ", backend,
                          " (rendezvous ", dist.host, ":", dist.port, "); effective batch ",
                          config.batch_size, " x ", config.grad_accum, " accumulation x ",
                          dist.world_size, " ranks = ",
                          global_batch * config.grad_accum));
      ASSIGN_OR_RETURN(s->collective, Collective::Join(dist, s->device));
      s->gradient_sync =
          std::make_unique<GradientSync>(s->collective.get(), s->params, dist.bucket_bytes);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("preparing training: ", e.what_without_backtrace()));
  }
  return std::unique_ptr<Trainer>(new Trainer(std::move(s)));
}

absl::StatusOr<TrainResult> Trainer::Run() {
  State& s = *s_;
  model::GeneratorScope generator(s.generator);
  TrainResult result;
  s.run_start = Clock::now();
  s.log_start = s.run_start;
  try {
    // Rank 0 alone reads the output folder; the others take its state below.
    if (s.options.resume && s.rank == 0) {
      if (auto latest = CheckpointManager::FindLatestComplete(s.config.output_dir)) {
        RETURN_IF_ERROR(s.Restore(*latest));
        result.resumed = true;
        s.Log(ftune::v1::LOG_LEVEL_INFO,
              absl::StrCat("resumed from ", *latest, " (epoch ", s.run.epoch + 1, ", batch ",
                           s.run.batch_in_epoch, ", step ", s.run.step, ")"));
      }
    }
    if (s.collective) RETURN_IF_ERROR(s.SyncFromRankZero());
    result.resumed = result.resumed || s.run.step > 0;
    s.steps_at_start = s.run.step;
    TrainEnd end = TrainEnd::kCompleted;
    while (s.run.epoch < s.config.epochs) {
      ASSIGN_OR_RETURN(std::optional<TrainEnd> stop, s.TrainEpoch());
      if (stop) {
        end = *stop;
        break;
      }
    }
    if (end == TrainEnd::kCompleted && s.last_saved_step != s.run.step) {
      if (absl::Status saved = s.SaveCheckpoint(false); !saved.ok()) {
        if (s.cancel->reason() != StopReason::kLeaseLost) return saved;
        end = TrainEnd::kLeaseLost;
      }
    }
    result.end = end;
  } catch (const CollectiveError& e) {
    // Another attempt, on whichever devices are free then, may well pass.
    return absl::UnavailableError(absl::StrCat("rank ", s.rank, ": ", e.what()));
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat("training: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training: ", e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat("training: out of memory (", e.what(), ")"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training: ", e.what()));
  }
  result.steps = s.run.step;
  result.total_steps = s.total_steps;
  result.skipped_steps = s.run.skipped_steps;
  result.best_checkpoint = s.best_checkpoint;
  result.last_checkpoint = s.last_checkpoint;
  result.best_metric_name = BestMetricName(s.config.metric_for_best);
  result.best_metric = s.run.best_metric;
  result.best_accuracy = s.run.best_accuracy;
  result.last_accuracy = s.run.last_accuracy;
  result.seconds = Seconds(s.run_start);
  return result;
}

absl::StatusOr<Trainer::StepStats> Trainer::TrainStep(const std::vector<data::Batch>& batches,
                                                      bool reuse_features) {
  State& s = *s_;
  if (batches.empty()) return absl::InvalidArgumentError("no batches");
  if (reuse_features && !s.cnn_frozen) {
    return absl::FailedPreconditionError("feature reuse needs a frozen feature encoder");
  }
  FeatureCache* features = reuse_features ? &s.train_features : nullptr;
  model::GeneratorScope generator(s.generator);
  try {
    int64_t samples = 0;
    for (const auto& b : batches) samples += b.labels.size(0);
    if (s.collective) {  // the window spans every rank's batches
      torch::Tensor total = torch::tensor({static_cast<double>(samples)}, torch::kDouble);
      s.collective->AllReduceSum(total);
      samples = static_cast<int64_t>(std::llround(total.item<double>()));
    }
    s.model()->train();
    size_t i = 0;
    return s.Step(static_cast<int64_t>(batches.size()), samples,
                  [&]() -> absl::StatusOr<data::Batch> { return batches[i++]; }, features,
                  /*clips=*/nullptr);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training step: ", e.what_without_backtrace()));
  }
}

}  // namespace ftune::train
