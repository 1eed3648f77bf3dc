#include "worker/train/loss_scaler.h"

#include <limits>

#include "gtest/gtest.h"
#include "torch/torch.h"
#include "worker/train/optimizer.h"

namespace ftune::train {
namespace {

// One optimizer step in the order the trainer does it; returns whether it was taken.
bool ScaledStep(DynamicLossScaler& scaler, FusedAdamW& opt, const torch::Tensor& w,
                const torch::Tensor& loss) {
  opt.zero_grad();
  scaler.Scale(loss).backward();
  return ScaledClippedStep(opt, {w}, scaler, /*max_grad_norm=*/0).taken;
}

TEST(LossScalerTest, InfGradientSkipsStepHalvesScaleLeavesWeights) {
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({4, 3}, torch::requires_grad());
  FusedAdamW opt({w}, torch::optim::AdamWOptions(0.1).weight_decay(0.0));
  DynamicLossScaler scaler;
  EXPECT_DOUBLE_EQ(scaler.scale(), 65536.0);
  const torch::Tensor before = w.detach().clone();

  // Injected inf: the gradient of w * inf is inf.
  torch::Tensor bad = (w * std::numeric_limits<float>::infinity()).sum();
  EXPECT_FALSE(ScaledStep(scaler, opt, w, bad));
  EXPECT_DOUBLE_EQ(scaler.scale(), 32768.0);
  EXPECT_TRUE(torch::equal(w.detach(), before));

  // NaN too.
  torch::Tensor nan = (w * std::numeric_limits<float>::quiet_NaN()).sum();
  EXPECT_FALSE(ScaledStep(scaler, opt, w, nan));
  EXPECT_DOUBLE_EQ(scaler.scale(), 16384.0);
  EXPECT_TRUE(torch::equal(w.detach(), before));
  EXPECT_TRUE(opt.state().empty()) << "a skipped step must not touch the moments";

  // A clean step moves the weights exactly as an unscaled AdamW step would.
  torch::Tensor reference = before.clone().requires_grad_(true);
  torch::optim::AdamW reference_opt({reference}, torch::optim::AdamWOptions(0.1).weight_decay(0.0));
  (reference * 2.0).sum().backward();
  reference_opt.step();
  EXPECT_TRUE(ScaledStep(scaler, opt, w, (w * 2.0).sum()));
  EXPECT_TRUE(torch::allclose(w.detach(), reference.detach(), 0, 1e-6));
  EXPECT_EQ(scaler.state().growth_tracker, 1);
}

TEST(LossScalerTest, GrowsAfterIntervalOfCleanSteps) {
  LossScalerOptions options;
  options.growth_interval = 3;
  DynamicLossScaler scaler(options);
  scaler.Update(false);
  scaler.Update(false);
  EXPECT_DOUBLE_EQ(scaler.scale(), 65536.0);
  scaler.Update(false);
  EXPECT_DOUBLE_EQ(scaler.scale(), 131072.0);
  EXPECT_EQ(scaler.state().growth_tracker, 0);
  scaler.Update(false);
  scaler.Update(true);  // an overflow resets the run of clean steps
  EXPECT_DOUBLE_EQ(scaler.scale(), 65536.0);
  EXPECT_EQ(scaler.state().growth_tracker, 0);
}

TEST(LossScalerTest, DefaultIntervalIs2000) {
  DynamicLossScaler scaler;
  for (int i = 0; i < 1999; ++i) scaler.Update(false);
  EXPECT_DOUBLE_EQ(scaler.scale(), 65536.0);
  scaler.Update(false);
  EXPECT_DOUBLE_EQ(scaler.scale(), 131072.0);
}

TEST(LossScalerTest, StateRoundTripsThroughJson) {
  DynamicLossScaler scaler;
  scaler.Update(true);
  scaler.Update(false);
  nlohmann::json saved = scaler.state().ToJson();
  auto state = LossScalerState::FromJson(saved);
  ASSERT_TRUE(state.ok()) << state.status();
  DynamicLossScaler restored;
  ASSERT_TRUE(restored.Restore(*state).ok());
  EXPECT_DOUBLE_EQ(restored.scale(), 32768.0);
  EXPECT_EQ(restored.state().growth_tracker, 1);
  EXPECT_FALSE(LossScalerState::FromJson({{"scale", -1}, {"growth_tracker", 0}}).ok());
  EXPECT_FALSE(LossScalerState::FromJson({{"scale", 2}}).ok());
}

TEST(LossScalerTest, DisabledIsIdentityButStillDetects) {
  LossScalerOptions options;
  options.enabled = false;
  DynamicLossScaler scaler(options);
  EXPECT_DOUBLE_EQ(scaler.scale(), 1.0);
  torch::Tensor w = torch::ones({2}, torch::requires_grad());
  FusedAdamW opt({w}, torch::optim::AdamWOptions(0.1));
  EXPECT_FALSE(ScaledStep(scaler, opt, w, (w * std::numeric_limits<float>::infinity()).sum()));
  EXPECT_TRUE(torch::equal(w.detach(), torch::ones({2})));
  EXPECT_TRUE(ScaledStep(scaler, opt, w, (w * 3.0).sum()));
  EXPECT_TRUE(torch::allclose(w.grad(), torch::full_like(w, 3.0)));
  EXPECT_DOUBLE_EQ(scaler.scale(), 1.0);
}

}  // namespace
}  // namespace ftune::train
