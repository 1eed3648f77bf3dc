#include "worker/train/loss_scaler.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace ftune::train {

nlohmann::json LossScalerState::ToJson() const {
  return {{"scale", scale}, {"growth_tracker", growth_tracker}};
}

absl::StatusOr<LossScalerState> LossScalerState::FromJson(const nlohmann::json& json) {
  if (!json.is_object() || !json.contains("scale") || !json["scale"].is_number() ||
      !json.contains("growth_tracker") || !json["growth_tracker"].is_number_integer()) {
    return absl::InvalidArgumentError(
        "loss scaler state needs numeric 'scale' and integer 'growth_tracker'");
  }
  LossScalerState state;
  state.scale = json["scale"].get<double>();
  state.growth_tracker = json["growth_tracker"].get<int64_t>();
  if (!(state.scale > 0) || !std::isfinite(state.scale) || state.growth_tracker < 0) {
    return absl::InvalidArgumentError(absl::StrCat("loss scaler state out of range: scale ",
                                                   state.scale, " growth_tracker ",
                                                   state.growth_tracker));
  }
  return state;
}

DynamicLossScaler::DynamicLossScaler(LossScalerOptions options) : options_(options) {
  state_.scale = options_.enabled ? options_.init_scale : 1.0;
}

torch::Tensor DynamicLossScaler::Scale(const torch::Tensor& loss) const {
  if (!options_.enabled) return loss;
  return loss * state_.scale;
}

void DynamicLossScaler::Update(bool found_inf) {
  if (!options_.enabled) return;
  if (found_inf) {
    state_.scale *= options_.backoff_factor;
    state_.growth_tracker = 0;
    return;
  }
  if (++state_.growth_tracker >= options_.growth_interval) {
    state_.scale *= options_.growth_factor;
    state_.growth_tracker = 0;
  }
}

absl::Status DynamicLossScaler::Restore(const LossScalerState& state) {
  if (!(state.scale > 0) || !std::isfinite(state.scale)) {
    return absl::InvalidArgumentError(absl::StrCat("loss scale must be finite and > 0, got ",
                                                   state.scale));
  }
  state_ = state;
  if (!options_.enabled) state_.scale = 1.0;
  return absl::OkStatus();
}

}  // namespace ftune::train
