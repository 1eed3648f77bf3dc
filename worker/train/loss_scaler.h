// Dynamic loss scaling for fp16 training (the rules of torch.cuda.amp.GradScaler): the loss is
// multiplied by `scale` before backward; before the step the gradients are divided by it and
// checked (ScaledClippedStep in optimizer.h); a step with an inf/NaN gradient is skipped and
// the scale halved; after
// `growth_interval` clean steps in a row the scale doubles. Device-agnostic, so it runs (and
// is tested) on CPU too.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "torch/torch.h"

namespace ftune::train {

struct LossScalerOptions {
  bool enabled = true;
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

struct LossScalerState {
  double scale = 1.0;
  int64_t growth_tracker = 0;  // clean steps since the last change of scale
  nlohmann::json ToJson() const;
  static absl::StatusOr<LossScalerState> FromJson(const nlohmann::json& json);
};

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(LossScalerOptions options = {});

  bool enabled() const { return options_.enabled; }
  // Current scale; 1 when disabled.
  double scale() const { return options_.enabled ? state_.scale : 1.0; }

  // loss * scale (the loss itself when disabled).
  torch::Tensor Scale(const torch::Tensor& loss) const;
  // Applies the outcome of one optimizer step: backoff on inf/NaN, growth after clean runs.
  void Update(bool found_inf);

  const LossScalerState& state() const { return state_; }
  absl::Status Restore(const LossScalerState& state);

 private:
  LossScalerOptions options_;
  LossScalerState state_;
};

}  // namespace ftune::train
