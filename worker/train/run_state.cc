#include "worker/train/run_state.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ftune::train {
namespace {

constexpr int kStateFormat = 1;

}  // namespace

nlohmann::json RunStateJson(const RunState& state, const RunDescription& run) {
  return {
      {"format", kStateFormat},
      {"epoch", state.epoch},
      {"batch_in_epoch", state.batch_in_epoch},
      {"step", state.step},
      {"total_steps", run.total_steps},
      {"skipped_steps", state.skipped_steps},
      {"run", run.identity},
      {"precision", run.precision},
      {"loss_scaler", state.loss_scaler.ToJson()},
      {"best",
       {{"has_best", state.has_best},
        {"metric_name", run.metric_name},
        {"metric", state.best_metric},
        {"accuracy", state.best_accuracy},
        {"step", state.best_step}}},
      {"evals_without_improvement", state.evals_without_improvement},
      {"last_accuracy", state.last_accuracy},
  };
}

absl::StatusOr<RunState> ParseRunState(const nlohmann::json& st, const nlohmann::json& identity,
                                       const RunStateSource& source) {
  RunState state;
  try {
    if (st.at("format").get<int>() != kStateFormat) {
      return absl::FailedPreconditionError(absl::StrCat(
          source.name, ": unsupported training_state format ", st.at("format").dump()));
    }
    // Checkpoints from before "run" existed kept seed, batch size, accumulation and clip
    // count at the top level.
    const nlohmann::json& saved_run = st.contains("run") ? st.at("run") : st;
    for (const auto& [key, now] : identity.items()) {
      if (!saved_run.contains(key) || saved_run.at(key) == now) continue;
      if (source.rank >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            source.name, " has ", key, " ", saved_run.at(key).dump(), ", rank ", source.rank,
            " has ", now.dump(), ": every rank must run the same job on the same data"));
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot resume from ", source.name, ": it was trained with ", key, " ",
          saved_run.at(key).dump(), ", this run has ", now.dump(),
          " (to start over, use a new output folder)"));
    }
    state.epoch = st.at("epoch").get<int>();
    state.batch_in_epoch = st.at("batch_in_epoch").get<int64_t>();
    state.step = st.at("step").get<int64_t>();
    state.skipped_steps = st.at("skipped_steps").get<int64_t>();
    const nlohmann::json& best = st.at("best");
    state.has_best = best.at("has_best").get<bool>();
    state.best_metric = best.at("metric").get<double>();
    state.best_accuracy = best.at("accuracy").get<double>();
    state.best_step = best.at("step").get<int64_t>();
    state.evals_without_improvement = st.at("evals_without_improvement").get<int>();
    state.last_accuracy = st.at("last_accuracy").get<double>();
    ASSIGN_OR_RETURN(state.loss_scaler, LossScalerState::FromJson(st.at("loss_scaler")));
  } catch (const nlohmann::json::exception& e) {
    return absl::FailedPreconditionError(absl::StrCat(source.file, ": ", e.what()));
  }
  return state;
}

}  // namespace ftune::train
