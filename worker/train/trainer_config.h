// The hyperparameters of one training run with every default resolved: JobSpec leaves fields
// unset, the trainer only ever sees explicit values (Hugging Face Trainer defaults — libtorch's
// own AdamW defaults differ, so nothing here relies on them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ftune/v1/job.pb.h"

namespace ftune::train {

enum class ScheduleKind { kLinear, kCosine, kConstant };
enum class RequestedPrecision { kAuto, kFp32, kFp16, kBf16 };
enum class BestMetric { kAccuracy, kMacroF1, kEvalLoss };

const char* BestMetricName(BestMetric metric);

struct TrainerConfig {
  // Data.
  int epochs = 3;
  int batch_size = 8;
  int grad_accum = 1;
  double max_seconds = 0;  // 0 = no crop
  bool group_by_length = false;
  uint64_t seed = 42;

  // AdamW.
  double learning_rate = 5e-5;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double weight_decay = 0.0;  // never applied to biases and LayerNorm weights
  double max_grad_norm = 1.0;  // 0 disables clipping

  // Schedule: warmup_steps wins over warmup_ratio when > 0.
  ScheduleKind schedule = ScheduleKind::kLinear;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;

  RequestedPrecision precision = RequestedPrecision::kAuto;

  // Freezing. freeze_feature_encoder is tri-state in the spec: unset means "frozen for
  // pretrained folders, trainable for random-init presets" (decided once the model is known).
  bool freeze_feature_encoder_set = false;
  bool freeze_feature_encoder = true;
  int freeze_layers = 0;
  bool freeze_backbone = false;

  // Evaluation, checkpoints, early stopping. 0 = at the end of each epoch.
  int64_t eval_every_steps = 0;
  int64_t checkpoint_every_steps = 0;
  int keep_last = 2;
  BestMetric metric_for_best = BestMetric::kAccuracy;
  int early_stopping_patience = 0;  // 0 = never stop early
  double early_stopping_threshold = 0.0;
  int64_t log_every_steps = 10;

  // Where and how.
  std::string device = "auto";
  int threads = 0;         // intra-op threads; 0 = leave libtorch's default (all cores)
  int loader_threads = 0;  // 0 = automatic
  std::string output_dir;
};

// Resolves a JobSpec's training section (and device/threads/output_dir) into a TrainerConfig:
// unset fields take the recipe for the model kind (common/job_spec.h RecipeFor), impossible
// values are InvalidArgument naming the field.
absl::StatusOr<TrainerConfig> ResolveTrainerConfig(const ftune::v1::JobSpec& spec);

// Optimizer steps in one epoch of `num_batches` forward passes: the last partial
// accumulation window still makes a step.
int64_t StepsPerEpoch(int64_t num_batches, int grad_accum);

// Warmup length in optimizer steps for a run of `total_steps`.
int64_t WarmupSteps(const TrainerConfig& config, int64_t total_steps);

}  // namespace ftune::train
