// JobSpec checks and defaults, shared by the controller (SubmitJob), ftctl (before sending)
// and the worker (before training).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ftune/v1/job.pb.h"

namespace ftune {

// Model presets (random initialisation): tiny | hubert-base | hubert-large.
const std::vector<std::string>& ModelPresetNames();
bool IsModelPreset(const std::string& model);

// The hyperparameters a job gets when it leaves them unset, by model kind. A checkpoint folder
// is fine-tuned with Hugging Face Trainer's defaults; a preset starts from random weights and
// gets a recipe measured to learn from scratch (bench/learn/README.md).
struct Recipe {
  const char* name;  // "fine-tune" or "from-scratch"
  uint32_t epochs;
  double learning_rate;
  double warmup_ratio;
  bool freeze_feature_encoder;
};
const Recipe& RecipeFor(const std::string& model);

// One line naming the recipe that fills `spec`'s unset fields, its values, and the ones the
// spec sets itself, e.g. "from-scratch recipe (random-init preset 'tiny'): 20 epochs,
// learning_rate 0.001, warmup_ratio 0.1, linear decay, feature encoder trained; set by the
// job: epochs 8".
std::string DescribeRecipe(const ftune::v1::JobSpec& spec);

// The dataset part of a spec (dataset, extra_datasets, label_map): OK, or InvalidArgument naming
// the first bad field, e.g. "extra_datasets[0].path: '/data/x' is listed twice".
absl::Status ValidateDatasets(const ftune::v1::JobSpec& spec);

// Data-parallel ranks one job may ask for.
inline constexpr uint32_t kMaxWorldSize = 256;

// OK, or InvalidArgument naming the first bad field, e.g.
// "training.batch_size: must be 1..4096". Unset fields (0, empty, absent optional) mean the
// default and are accepted.
absl::Status ValidateJobSpec(const ftune::v1::JobSpec& spec);

// `spec` with every default written out: epochs, learning_rate and warmup_ratio from
// RecipeFor(model), batch_size 8, grad_accum 1, weight_decay 0, max_grad_norm 1,
// max_seconds 0, keep_last 2, metric_for_best accuracy,
// early_stopping_threshold 0, seed 42, log_every_steps 10, device auto, max_restarts 3,
// world_size 1,
// dataset.eval_fraction 0.2 (and each extra dataset's). Explicit values are kept.
// training.freeze_feature_encoder stays unset when unset: its default depends on the model
// (see job.proto).
ftune::v1::JobSpec WithDefaults(const ftune::v1::JobSpec& spec);

// dataset.path, then each extra_datasets[i].path.
std::vector<std::string> DatasetPaths(const ftune::v1::JobSpec& spec);

// True for "", auto, cpu, cuda and cuda:N.
bool IsValidDeviceName(const std::string& device);

}  // namespace ftune
