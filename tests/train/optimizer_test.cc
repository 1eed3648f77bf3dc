#include "worker/train/optimizer.h"

#include <limits>
#include <sstream>

#include "gtest/gtest.h"
#include "torch/torch.h"

namespace ftune::train {
namespace {

// Two parameter groups (decayed and not), one parameter large enough to span several
// parallel chunks, one without a gradient.
struct Params {
  torch::Tensor big, small, bias, unused;
  std::vector<torch::Tensor> all() const { return {big, small, bias, unused}; }
  std::vector<torch::optim::OptimizerParamGroup> Groups(const torch::optim::AdamWOptions& o) const {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{big, small, unused},
                        std::make_unique<torch::optim::AdamWOptions>(o));
    auto no_decay = std::make_unique<torch::optim::AdamWOptions>(o);
    no_decay->weight_decay(0);
    groups.emplace_back(std::vector<torch::Tensor>{bias}, std::move(no_decay));
    return groups;
  }
};

Params MakeParams(int seed) {
  torch::manual_seed(seed);
  return Params{torch::randn({300, 400}).requires_grad_(), torch::randn({7, 3}).requires_grad_(),
                torch::randn({11}).requires_grad_(), torch::randn({5}).requires_grad_()};
}

void SetGradients(const Params& p, int step, double scale) {
  torch::manual_seed(1000 + step);
  for (const torch::Tensor& t : {p.big, p.small, p.bias}) {
    t.mutable_grad() = torch::randn_like(t) * scale;
  }
}

// Within a few float roundings: the fused loop contracts multiply-adds into FMAs.
void ExpectSameWeights(const Params& a, const Params& b, double tol) {
  EXPECT_TRUE(torch::allclose(a.big, b.big, tol, tol)) << (a.big - b.big).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(a.small, b.small, tol, tol));
  EXPECT_TRUE(torch::allclose(a.bias, b.bias, tol, tol));
  EXPECT_TRUE(torch::equal(a.unused, b.unused));
}

const torch::optim::AdamWOptions kOptions =
    torch::optim::AdamWOptions(3e-3).betas({0.9, 0.98}).eps(1e-6).weight_decay(0.05);

TEST(FusedAdamWTest, MatchesLibtorchAdamWOverSteps) {
  Params fused = MakeParams(0), reference = MakeParams(0);
  FusedAdamW fused_opt(fused.Groups(kOptions), kOptions);
  torch::optim::AdamW reference_opt(reference.Groups(kOptions), kOptions);
  for (int step = 0; step < 6; ++step) {
    SetGradients(fused, step, 1.0);
    SetGradients(reference, step, 1.0);
    fused_opt.step();
    reference_opt.step();
  }
  ExpectSameWeights(fused, reference, 1e-6);
  // The update really moved the weights (a no-op step would also "match" a broken reference).
  EXPECT_FALSE(torch::allclose(fused.big, MakeParams(0).big, 0, 1e-4));
}

// The raw-pointer update counts as an in-place one: caches keyed on the version counter (the
// feature encoder's GEMM weights) see it.
TEST(FusedAdamWTest, StepBumpsTheVersionOfUpdatedParameters) {
  Params params = MakeParams(0);
  FusedAdamW optimizer(params.Groups(kOptions), kOptions);
  SetGradients(params, 0, 1.0);
  const uint32_t before = params.big._version();
  optimizer.step();
  EXPECT_GT(params.big._version(), before);
}

TEST(FusedAdamWTest, GradScaleEqualsPreScaledGradients) {
  Params scaled = MakeParams(1), reference = MakeParams(1);
  FusedAdamW scaled_opt(scaled.Groups(kOptions), kOptions);
  torch::optim::AdamW reference_opt(reference.Groups(kOptions), kOptions);
  scaled_opt.set_grad_scale(0.25);
  torch::Tensor last_grad;
  for (int step = 0; step < 3; ++step) {
    SetGradients(scaled, step, 4.0);
    SetGradients(reference, step, 1.0);
    last_grad = scaled.small.grad().clone();
    scaled_opt.step();
    reference_opt.step();
  }
  ExpectSameWeights(scaled, reference, 1e-6);
  // The gradients themselves are not rewritten.
  EXPECT_TRUE(torch::equal(scaled.small.grad(), last_grad));
}

TEST(FusedAdamWTest, StateRoundTripsWithLibtorchAdamW) {
  // Saved by the fused optimizer, continued by libtorch's, and vice versa.
  Params a = MakeParams(2), b = MakeParams(2);
  FusedAdamW a_opt(a.Groups(kOptions), kOptions);
  torch::optim::AdamW b_opt(b.Groups(kOptions), kOptions);
  for (int step = 0; step < 2; ++step) {
    SetGradients(a, step, 1.0);
    SetGradients(b, step, 1.0);
    a_opt.step();
    b_opt.step();
  }
  std::stringstream a_saved, b_saved;
  torch::save(a_opt, a_saved);
  torch::save(b_opt, b_saved);
  torch::optim::AdamW a_continued(a.Groups(kOptions), kOptions);
  FusedAdamW b_continued(b.Groups(kOptions), kOptions);
  torch::load(a_continued, a_saved);
  torch::load(b_continued, b_saved);
  for (int step = 2; step < 4; ++step) {
    SetGradients(a, step, 1.0);
    SetGradients(b, step, 1.0);
    a_continued.step();
    b_continued.step();
  }
  ExpectSameWeights(a, b, 1e-6);
}

TEST(GradNormTest, MatchesTorchNormAndFlagsNonFinite) {
  Params p = MakeParams(3);
  SetGradients(p, 0, 1.0);
  const double expected =
      torch::stack({p.big.grad().norm(), p.small.grad().norm(), p.bias.grad().norm()})
          .norm()
          .item<double>();
  EXPECT_NEAR(GradNorm(p.all()), expected, 1e-4 * expected);
  p.big.mutable_grad()[123][45] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(std::isfinite(GradNorm(p.all())));
  p.big.mutable_grad()[123][45] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(std::isfinite(GradNorm(p.all())));
  EXPECT_EQ(GradNorm({torch::zeros({3})}), 0.0);  // no gradient at all
}

TEST(ScaledClippedStepTest, EqualsUnscaleClipThenStep) {
  // Gradients hold 1024 x the true ones; the step must equal libtorch's unscale, clip, step.
  Params fused = MakeParams(4), reference = MakeParams(4);
  FusedAdamW fused_opt(fused.Groups(kOptions), kOptions);
  torch::optim::AdamW reference_opt(reference.Groups(kOptions), kOptions);
  DynamicLossScaler scaler(LossScalerOptions{.enabled = true, .init_scale = 1024.0});
  for (int step = 0; step < 3; ++step) {
    SetGradients(fused, step, 1024.0);
    SetGradients(reference, step, 1.0);
    const StepResult result = ScaledClippedStep(fused_opt, fused.all(), scaler, 5.0);
    ASSERT_TRUE(result.taken);
    const double norm = torch::nn::utils::clip_grad_norm_(reference.all(), 5.0);
    EXPECT_NEAR(result.grad_norm, norm, 1e-4 * norm);
    EXPECT_GT(norm, 5.0) << "the test must exercise clipping";
    reference_opt.step();
  }
  ExpectSameWeights(fused, reference, 1e-6);
  EXPECT_EQ(scaler.state().growth_tracker, 3);
}

}  // namespace
}  // namespace ftune::train
