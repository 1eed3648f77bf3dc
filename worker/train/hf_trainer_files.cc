#include "worker/train/hf_trainer_files.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/train/model_card.h"

namespace ftune::train {
namespace {

namespace fs = std::filesystem;

constexpr char kHfStateFile[] = "trainer_state.json";
constexpr char kCheckpointPrefix[] = "checkpoint-";

// Writes `content` to `path` through a temporary file and a rename, so a reader never sees half.
absl::Status WriteFileAtomically(const fs::path& path, const std::string& content) {
  const fs::path temp = path.parent_path() / absl::StrCat(".", path.filename().string(), ".tmp");
  {
    std::ofstream out(temp, std::ios::trunc);
    out << content;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", temp.string()));
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot write ", path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// HF writes its JSON files with sorted keys (nlohmann's objects are sorted) and indent 2.
std::string Json(const nlohmann::json& j) { return j.dump(2) + "\n"; }

// "checkpoint-<N>" (any folder) -> N.
std::optional<int64_t> CheckpointStep(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  int64_t step = 0;
  if (name.rfind(kCheckpointPrefix, 0) != 0 ||
      !absl::SimpleAtoi(name.substr(sizeof(kCheckpointPrefix) - 1), &step)) {
    return std::nullopt;
  }
  return step;
}

const char* ScheduleName(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kCosine:
      return "cosine";
    case ScheduleKind::kConstant:
      return "constant";
    case ScheduleKind::kLinear:
      break;
  }
  return "linear";
}

const char* PrecisionName(RequestedPrecision precision) {
  switch (precision) {
    case RequestedPrecision::kFp32:
      return "fp32";
    case RequestedPrecision::kFp16:
      return "fp16 autocast, dynamic loss scaling";
    case RequestedPrecision::kBf16:
      return "bf16 autocast";
    case RequestedPrecision::kAuto:
      break;
  }
  return "auto (fp16 on CUDA, bf16 on CPUs that have it, else fp32)";
}

}  // namespace

HfTrainerFiles::HfTrainerFiles(HfTrainerFilesOptions options, EventSink* next)
    : options_(std::move(options)), next_(next) {}

void HfTrainerFiles::Emit(ftune::v1::JobEvent event) {
  if (event.has_dataset_summary()) {
    dataset_ = event.dataset_summary();
  } else if (event.has_train_progress()) {
    const ftune::v1::TrainProgress& p = event.train_progress();
    log_history_.push_back({{"epoch", p.epoch_progress()},
                            {"grad_norm", p.grad_norm()},
                            {"learning_rate", p.learning_rate()},
                            {"loss", p.loss()},
                            {"step", p.step()}});
  } else if (event.has_eval_result()) {
    const ftune::v1::EvalResult& r = event.eval_result();
    log_history_.push_back(EvalEntry(r));
    last_eval_ = r;
    if (r.is_best()) {
      best_metric_ = MetricValue(r);
      best_step_ = r.step();
    }
  }
  next_->Emit(std::move(event));
}

double HfTrainerFiles::MetricValue(const ftune::v1::EvalResult& eval) const {
  switch (options_.config.metric_for_best) {
    case BestMetric::kMacroF1:
      return eval.macro_f1();
    case BestMetric::kEvalLoss:
      return eval.loss();
    case BestMetric::kAccuracy:
      break;
  }
  return eval.accuracy();
}

nlohmann::json HfTrainerFiles::EvalEntry(const ftune::v1::EvalResult& r) const {
  const double seconds = r.seconds() > 0 ? r.seconds() : 0.0;
  const int64_t batch = std::max(1, options_.config.batch_size);
  const int64_t batches = (r.num_samples() + batch - 1) / batch;
  return {{"epoch", r.epoch_progress()},
          {"eval_accuracy", r.accuracy()},
          {"eval_loss", r.loss()},
          {"eval_macro_f1", r.macro_f1()},
          {"eval_runtime", seconds},
          {"eval_samples_per_second", seconds > 0 ? r.num_samples() / seconds : 0.0},
          {"eval_steps_per_second", seconds > 0 ? batches / seconds : 0.0},
          {"step", r.step()}};
}

int64_t HfTrainerFiles::TotalSteps() const {
  if (!dataset_) return 0;
  const TrainerConfig& c = options_.config;
  const int64_t batches = (dataset_->train_files() + c.batch_size - 1) / std::max(1, c.batch_size);
  return StepsPerEpoch(batches, c.grad_accum) * c.epochs;
}

nlohmann::json HfTrainerFiles::TrainerState(int64_t step, double epoch) const {
  const TrainerConfig& c = options_.config;
  nlohmann::json state = {
      {"best_metric", best_metric_ ? nlohmann::json(*best_metric_) : nlohmann::json(nullptr)},
      {"best_model_checkpoint",
       best_step_ >= 0
           ? nlohmann::json(
                 (fs::path(c.output_dir) / absl::StrCat(kCheckpointPrefix, best_step_)).string())
           : nlohmann::json(nullptr)},
      {"epoch", epoch},
      {"global_step", step},
      {"is_hyper_param_search", false},
      {"is_local_process_zero", true},
      {"is_world_process_zero", true},
      {"log_history", log_history_},
      {"logging_steps", c.log_every_steps},
      {"max_steps", TotalSteps()},
      {"num_train_epochs", c.epochs},
      {"total_flos", 0},
      {"train_batch_size", c.batch_size},
      {"trial_name", nullptr},
      {"trial_params", nullptr},
  };
  // Unset (per-epoch) intervals keep HF's defaults.
  if (c.eval_every_steps > 0) state["eval_steps"] = c.eval_every_steps;
  if (c.checkpoint_every_steps > 0) state["save_steps"] = c.checkpoint_every_steps;
  return state;
}

absl::Status HfTrainerFiles::ContinueFrom(const std::string& checkpoint_dir) {
  const fs::path path = fs::path(checkpoint_dir) / kHfStateFile;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), " does not exist"));
  try {
    const nlohmann::json state = nlohmann::json::parse(in);
    const int64_t step = state.at("global_step").get<int64_t>();
    std::vector<nlohmann::json> history;
    for (const nlohmann::json& entry : state.at("log_history")) {
      if (entry.at("step").get<int64_t>() <= step) history.push_back(entry);
    }
    std::optional<double> best_metric;
    int64_t best_step = -1;
    if (!state.at("best_metric").is_null()) best_metric = state.at("best_metric").get<double>();
    if (!state.at("best_model_checkpoint").is_null()) {
      best_step = CheckpointStep(state.at("best_model_checkpoint").get<std::string>()).value_or(-1);
    }
    log_history_ = std::move(history);
    best_metric_ = best_metric;
    best_step_ = best_step;
    start_step_ = last_step_ = step;
    start_epoch_ = last_epoch_ = state.at("epoch").get<double>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status HfTrainerFiles::WriteCheckpointFiles(const std::string& dir, int64_t step,
                                                  double epoch) {
  last_step_ = step;
  last_epoch_ = epoch;
  RETURN_IF_ERROR(
      WriteFileAtomically(fs::path(dir) / kHfStateFile, Json(TrainerState(step, epoch))));
  return WriteFileAtomically(fs::path(dir) / "README.md", ModelCard(step, epoch));
}

absl::Status HfTrainerFiles::WriteRunResults(double train_runtime) {
  const fs::path out(options_.config.output_dir);
  // HF's train_loss: the mean loss over every step, from the logged means of their windows.
  double loss_sum = 0;
  int64_t logged_steps = 0;
  for (const nlohmann::json& entry : log_history_) {
    if (!entry.contains("loss")) continue;
    const int64_t step = entry.at("step").get<int64_t>();
    loss_sum += entry.at("loss").get<double>() * static_cast<double>(step - logged_steps);
    logged_steps = step;
  }
  const double runtime = train_runtime > 0 ? train_runtime : 0.0;
  const double samples =
      dataset_ ? dataset_->train_files() * std::max(0.0, last_epoch_ - start_epoch_) : 0.0;
  nlohmann::json train = {
      {"epoch", last_epoch_},
      {"train_loss", logged_steps > 0 ? loss_sum / static_cast<double>(logged_steps) : 0.0},
      {"train_runtime", runtime},
      {"train_samples_per_second", runtime > 0 ? samples / runtime : 0.0},
      {"train_steps_per_second",
       runtime > 0 ? static_cast<double>(last_step_ - start_step_) / runtime : 0.0},
  };
  RETURN_IF_ERROR(WriteFileAtomically(out / "train_results.json", Json(train)));
  nlohmann::json all = train;
  for (auto it = log_history_.rbegin(); it != log_history_.rend(); ++it) {
    if (!it->contains("eval_loss") || it->at("step").get<int64_t>() != best_step_) continue;
    nlohmann::json eval = {{"epoch", last_epoch_}};
    for (const auto& [key, value] : it->items()) {
      if (key.rfind("eval_", 0) == 0) eval[key] = value;
    }
    RETURN_IF_ERROR(WriteFileAtomically(out / "eval_results.json", Json(eval)));
    all.update(eval);
    break;
  }
  RETURN_IF_ERROR(WriteFileAtomically(out / "all_results.json", Json(all)));
  nlohmann::json state = TrainerState(last_step_, last_epoch_);
  nlohmann::json summary = train;
  summary["step"] = last_step_;
  state["log_history"].push_back(summary);
  return WriteFileAtomically(out / kHfStateFile, Json(state));
}

std::vector<std::pair<std::string, std::string>> HfTrainerFiles::Hyperparameters() const {
  const TrainerConfig& c = options_.config;
  std::vector<std::pair<std::string, std::string>> h = {
      {"learning_rate", absl::StrCat(c.learning_rate)},
      {"train_batch_size", absl::StrCat(c.batch_size)},
      {"eval_batch_size", absl::StrCat(c.batch_size)},
      {"seed", absl::StrCat(c.seed)},
      {"gradient_accumulation_steps", absl::StrCat(c.grad_accum)},
      {"total_train_batch_size", absl::StrCat(c.batch_size * c.grad_accum)},
      {"optimizer", absl::StrCat("AdamW with betas=(", c.adam_beta1, ",", c.adam_beta2,
                                 ") and epsilon=", c.adam_epsilon, ", weight_decay ",
                                 c.weight_decay, " (none on biases and LayerNorm weights)")},
      {"lr_scheduler_type", ScheduleName(c.schedule)},
  };
  if (c.warmup_steps > 0) {
    h.emplace_back("lr_scheduler_warmup_steps", absl::StrCat(c.warmup_steps));
  } else if (c.warmup_ratio > 0) {
    h.emplace_back("lr_scheduler_warmup_ratio", absl::StrCat(c.warmup_ratio));
  }
  h.emplace_back("num_epochs", absl::StrCat(c.epochs));
  h.emplace_back("max_grad_norm", absl::StrCat(c.max_grad_norm));
  h.emplace_back("precision", PrecisionName(c.precision));
  const bool frozen =
      c.freeze_feature_encoder_set ? c.freeze_feature_encoder : !options_.random_init;
  h.emplace_back("freeze_feature_encoder", frozen ? "true" : "false");
  if (c.freeze_layers > 0) h.emplace_back("freeze_layers", absl::StrCat(c.freeze_layers));
  if (c.freeze_backbone) h.emplace_back("freeze_backbone", "true");
  if (c.max_seconds > 0) h.emplace_back("max_seconds", absl::StrCat(c.max_seconds));
  if (c.group_by_length) h.emplace_back("group_by_length", "true");
  h.emplace_back("metric_for_best_model", BestMetricName(c.metric_for_best));
  return h;
}

std::string HfTrainerFiles::ModelCard(int64_t step, double epoch) const {
  ModelCardInputs in;
  const std::string& name = options_.spec.name();
  fs::path output = fs::path(options_.config.output_dir).lexically_normal();
  if (!output.has_filename()) output = output.parent_path();
  in.model_name = !name.empty() ? name : output.filename().string();
  if (in.model_name.empty() || in.model_name == ".") in.model_name = "ftune-model";
  in.base_model = options_.base_model;
  in.started_from = options_.started_from;
  if (dataset_) in.dataset = *dataset_;
  if (last_eval_ && last_eval_->step() == step) in.eval = *last_eval_;
  in.step = step;
  in.epoch = epoch;
  in.hyperparameters = Hyperparameters();
  in.log_history = log_history_;
  return RenderModelCard(in);
}

}  // namespace ftune::train
