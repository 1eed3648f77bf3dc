// JobSpec checks and defaults, shared by the controller (SubmitJob), ftctl (before sending)
// and the worker (before training).
#pragma once

#include "absl/status/status.h"
#include "ftune/v1/job.pb.h"

namespace ftune {

// OK, or InvalidArgument naming the first bad field, e.g.
// "training.batch_size: must be 1..4096". Unset fields (0, empty, absent optional) mean the
// default and are accepted.
absl::Status ValidateJobSpec(const ftune::v1::JobSpec& spec);

// `spec` with every default written out: epochs 3, batch_size 8, grad_accum 1,
// learning_rate 5e-5, warmup_ratio 0, weight_decay 0, max_grad_norm 1,
// max_seconds 0, keep_last 2, metric_for_best accuracy,
// early_stopping_threshold 0, seed 42, log_every_steps 10, device auto, max_restarts 3,
// dataset.eval_fraction 0.2. Explicit values are kept. training.freeze_feature_encoder stays
// unset when unset: its default depends on the model (see job.proto).
ftune::v1::JobSpec WithDefaults(const ftune::v1::JobSpec& spec);

// True for "", auto, cpu, cuda and cuda:N.
bool IsValidDeviceName(const std::string& device);

}  // namespace ftune
