// Where a run stands: its place in the data, its step counts, its best evaluation so far and
// its loss scale. A checkpoint's training_state/trainer_state.json holds it beside the run's
// identity (everything that fixes the run's trajectory), and rank 0 of a data-parallel run
// sends it to the other ranks the same way.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/train/loss_scaler.h"

namespace ftune::train {

struct RunState {
  // The next micro-batch is batch `batch_in_epoch` of epoch `epoch` (0-based); `step`
  // optimizer steps are done, `skipped_steps` of them skipped on inf/NaN gradients.
  int epoch = 0;
  int64_t batch_in_epoch = 0;
  int64_t step = 0;
  int64_t skipped_steps = 0;
  // The best evaluation so far by the run's metric.
  bool has_best = false;
  double best_metric = 0;
  double best_accuracy = 0;
  int64_t best_step = -1;
  int evals_without_improvement = 0;
  double last_accuracy = 0;
  LossScalerState loss_scaler;
};

// What the JSON says about the run besides RunState.
struct RunDescription {
  nlohmann::json identity;  // must match exactly to continue the run
  std::string precision;
  std::string metric_name;
  int64_t total_steps = 0;
};

nlohmann::json RunStateJson(const RunState& state, const RunDescription& run);

// Where a state comes from, for errors: a checkpoint folder (`rank` < 0) or rank 0, as
// received by rank `rank`.
struct RunStateSource {
  std::string name;  // the checkpoint folder, or "rank 0"
  std::string file;  // what was parsed
  int rank = -1;
};

// The state of RunStateJson's output, once its identity is this run's (`identity`): keys the
// saved identity lacks (older checkpoints) are not compared. FailedPrecondition naming the
// field that differs, or the unreadable field; InvalidArgument when rank 0's run differs.
absl::StatusOr<RunState> ParseRunState(const nlohmann::json& json,
                                       const nlohmann::json& identity,
                                       const RunStateSource& source);

}  // namespace ftune::train
