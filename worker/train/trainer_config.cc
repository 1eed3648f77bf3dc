#include "worker/train/trainer_config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/job_spec.h"

namespace ftune::train {

const char* BestMetricName(BestMetric metric) {
  switch (metric) {
    case BestMetric::kAccuracy:
      return "accuracy";
    case BestMetric::kMacroF1:
      return "macro_f1";
    case BestMetric::kEvalLoss:
      return "eval_loss";
  }
  return "accuracy";
}

absl::StatusOr<TrainerConfig> ResolveTrainerConfig(const ftune::v1::JobSpec& job_spec) {
  // The recipe for the model kind fills what the job leaves unset.
  const ftune::v1::JobSpec spec = WithDefaults(job_spec);
  const ftune::v1::TrainingConfig& t = spec.training();
  TrainerConfig c;
  if (t.epochs() > 0) c.epochs = static_cast<int>(t.epochs());
  if (t.batch_size() > 0) c.batch_size = static_cast<int>(t.batch_size());
  if (t.grad_accum() > 0) c.grad_accum = static_cast<int>(t.grad_accum());
  if (t.has_learning_rate()) {
    if (!(t.learning_rate() > 0) || !std::isfinite(t.learning_rate())) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.learning_rate must be > 0, got ", t.learning_rate()));
    }
    c.learning_rate = t.learning_rate();
  }
  c.warmup_steps = t.warmup_steps();
  if (t.has_warmup_ratio()) {
    if (!(t.warmup_ratio() >= 0 && t.warmup_ratio() <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.warmup_ratio must be in [0, 1], got ", t.warmup_ratio()));
    }
    c.warmup_ratio = t.warmup_ratio();
  }
  switch (t.schedule()) {
    case ftune::v1::LR_SCHEDULE_LINEAR:
      c.schedule = ScheduleKind::kLinear;
      break;
    case ftune::v1::LR_SCHEDULE_COSINE:
      c.schedule = ScheduleKind::kCosine;
      break;
    case ftune::v1::LR_SCHEDULE_CONSTANT:
      c.schedule = ScheduleKind::kConstant;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("training.schedule: unknown value ", static_cast<int>(t.schedule())));
  }
  if (t.has_weight_decay()) {
    if (!(t.weight_decay() >= 0) || !std::isfinite(t.weight_decay())) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.weight_decay must be >= 0, got ", t.weight_decay()));
    }
    c.weight_decay = t.weight_decay();
  }
  if (t.has_max_grad_norm()) {
    if (!(t.max_grad_norm() >= 0) || !std::isfinite(t.max_grad_norm())) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.max_grad_norm must be >= 0, got ", t.max_grad_norm()));
    }
    c.max_grad_norm = t.max_grad_norm();
  }
  switch (t.precision()) {
    case ftune::v1::PRECISION_AUTO:
      c.precision = RequestedPrecision::kAuto;
      break;
    case ftune::v1::PRECISION_FP32:
      c.precision = RequestedPrecision::kFp32;
      break;
    case ftune::v1::PRECISION_FP16:
      c.precision = RequestedPrecision::kFp16;
      break;
    case ftune::v1::PRECISION_BF16:
      c.precision = RequestedPrecision::kBf16;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("training.precision: unknown value ", static_cast<int>(t.precision())));
  }
  if (t.has_freeze_feature_encoder()) {
    c.freeze_feature_encoder_set = true;
    c.freeze_feature_encoder = t.freeze_feature_encoder();
  }
  c.freeze_layers = static_cast<int>(t.freeze_layers());
  c.freeze_backbone = t.freeze_backbone();
  if (t.has_max_seconds()) {
    if (!(t.max_seconds() >= 0) || !std::isfinite(t.max_seconds())) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.max_seconds must be >= 0, got ", t.max_seconds()));
    }
    c.max_seconds = t.max_seconds();
  }
  c.eval_every_steps = t.eval_every_steps();
  c.checkpoint_every_steps = t.checkpoint_every_steps();
  if (t.has_keep_last()) c.keep_last = static_cast<int>(t.keep_last());
  if (t.metric_for_best().empty() || t.metric_for_best() == "accuracy") {
    c.metric_for_best = BestMetric::kAccuracy;
  } else if (t.metric_for_best() == "macro_f1") {
    c.metric_for_best = BestMetric::kMacroF1;
  } else if (t.metric_for_best() == "eval_loss" || t.metric_for_best() == "loss") {
    c.metric_for_best = BestMetric::kEvalLoss;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.metric_for_best must be accuracy, macro_f1 or eval_loss, got '",
        t.metric_for_best(), "'"));
  }
  c.early_stopping_patience = static_cast<int>(t.early_stopping_patience());
  if (t.has_early_stopping_threshold()) {
    if (!(t.early_stopping_threshold() >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "training.early_stopping_threshold must be >= 0, got ", t.early_stopping_threshold()));
    }
    c.early_stopping_threshold = t.early_stopping_threshold();
  }
  if (t.has_seed()) c.seed = t.seed();
  if (t.log_every_steps() > 0) c.log_every_steps = t.log_every_steps();
  c.group_by_length = t.group_by_length();
  c.device = spec.device().empty() ? "auto" : spec.device();
  c.threads = static_cast<int>(spec.threads());
  c.output_dir = spec.output_dir();
  if (c.output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  return c;
}

int64_t StepsPerEpoch(int64_t num_batches, int grad_accum) {
  if (grad_accum <= 1) return num_batches;
  return (num_batches + grad_accum - 1) / grad_accum;
}

int64_t WarmupSteps(const TrainerConfig& config, int64_t total_steps) {
  if (config.warmup_steps > 0) return config.warmup_steps;
  // As Hugging Face: ceil(total * ratio).
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * config.warmup_ratio));
}

}  // namespace ftune::train
