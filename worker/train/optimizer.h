// The optimizer step: AdamW fused into one pass per parameter, with the loss-scale unscale,
// the inf/NaN check and gradient-norm clipping folded in.
//
// libtorch's AdamW runs about eight tensor ops per parameter, and unscaling, checking and
// clipping add five more passes over every gradient: together about a fifth of a
// hubert-base step on CPU. Here the gradients are read twice (norm, then the update) and the
// rest is arithmetic inside the update's pass.
#pragma once

#include <vector>

#include "torch/torch.h"
#include "worker/train/loss_scaler.h"

namespace ftune::train {

// torch.optim.AdamW's arithmetic and state (exp_avg, exp_avg_sq, step per parameter, saved
// and loaded by the base class, so the two read each other's checkpoints), computed in one
// parallel pass per CPU float32 parameter. Each gradient is multiplied by `grad_scale` as it
// is read and left untouched. When any parameter is off the CPU or not float32, the step takes
// the base class's path for all of them, scaling the gradients in place first.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  // Multiplier applied to every gradient by the following step() calls.
  void set_grad_scale(double scale) { grad_scale_ = scale; }
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  double grad_scale_ = 1.0;
};

// L2 norm over every defined gradient of `params`, accumulated in double; inf or NaN exactly
// when a gradient holds one (or its squares overflow a double).
double GradNorm(const std::vector<torch::Tensor>& params);

struct StepResult {
  bool taken = false;
  // Norm of the unscaled gradient before clipping; inf when the step was skipped.
  double grad_norm = 0;
};

// One optimizer step as training takes it: the gradients hold loss * scaler.scale(); skip the
// step on inf/NaN, otherwise unscale, clip the norm to `max_grad_norm` (<= 0: no clipping) and
// update; then tell the scaler the outcome.
StepResult ScaledClippedStep(FusedAdamW& optimizer, const std::vector<torch::Tensor>& params,
                             DynamicLossScaler& scaler, double max_grad_norm);

}  // namespace ftune::train
