#include "worker/train/optimizer.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>

#include <cmath>
#include <limits>

#include "common/cpu_dispatch.h"

namespace ftune::train {
namespace {

constexpr int64_t kGrain = 1 << 15;

bool FusedPathApplies(const torch::Tensor& p) {
  const torch::Tensor& g = p.grad();
  return p.device().is_cpu() && p.is_contiguous() && g.is_contiguous() &&
         p.scalar_type() == torch::kFloat && g.scalar_type() == torch::kFloat;
}

struct AdamWScalars {
  float grad_scale, decay, beta1, beta2, step_size, sqrt_bias_correction2, eps;
};

// Elements [begin, end) of one parameter; written so that it vectorizes (no aliasing reads
// after writes, -fno-math-errno for sqrt).
FTUNE_CPU_DISPATCH
void AdamWChunk(float* __restrict param, const float* __restrict grad, float* __restrict exp_avg,
                float* __restrict exp_avg_sq, int64_t begin, int64_t end, AdamWScalars c) {
  const float one_minus_beta1 = 1 - c.beta1, one_minus_beta2 = 1 - c.beta2;
  for (int64_t i = begin; i < end; ++i) {
    const float g = grad[i] * c.grad_scale;
    const float m = exp_avg[i] * c.beta1 + g * one_minus_beta1;
    const float v = exp_avg_sq[i] * c.beta2 + g * g * one_minus_beta2;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float denom = std::sqrt(v) / c.sqrt_bias_correction2 + c.eps;
    param[i] = param[i] * c.decay - c.step_size * (m / denom);
  }
}

// Sum of squares of [begin, end) in double; eight independent accumulators so the loop
// vectorizes without reassociating a single running sum.
FTUNE_CPU_DISPATCH
double SumOfSquaresChunk(const float* __restrict data, int64_t begin, int64_t end) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const double x = data[i + k];
      acc[k] += x * x;
    }
  }
  double sum = 0;
  for (; i < end; ++i) sum += static_cast<double>(data[i]) * data[i];
  for (double a : acc) sum += a;
  return sum;
}

}  // namespace

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  bool all_fused = true;
  for (auto& group : param_groups_) {
    for (auto& p : group.params()) {
      if (p.grad().defined() && !FusedPathApplies(p)) all_fused = false;
    }
  }
  if (!all_fused) {
    if (grad_scale_ != 1.0) {
      for (auto& group : param_groups_) {
        for (auto& p : group.params()) {
          if (p.grad().defined()) p.mutable_grad().mul_(grad_scale_);
        }
      }
    }
    torch::optim::AdamW::step();
    return loss;
  }
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    TORCH_CHECK(!options.amsgrad(), "FusedAdamW does not implement amsgrad");
    const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto found = state_.find(key);
      if (found == state_.end()) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, at::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(torch::zeros_like(p, at::MemoryFormat::Contiguous));
        found = state_.emplace(key, std::move(fresh)).first;
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*found->second);
      TORCH_CHECK(state.exp_avg().is_contiguous() && state.exp_avg_sq().is_contiguous(),
                  "AdamW state must be contiguous");
      state.step(state.step() + 1);
      const double bias_correction1 = 1 - std::pow(beta1, state.step());
      const double bias_correction2 = 1 - std::pow(beta2, state.step());
      const AdamWScalars scalars{static_cast<float>(grad_scale_),
                                 static_cast<float>(1 - options.lr() * options.weight_decay()),
                                 static_cast<float>(beta1),
                                 static_cast<float>(beta2),
                                 static_cast<float>(options.lr() / bias_correction1),
                                 static_cast<float>(std::sqrt(bias_correction2)),
                                 static_cast<float>(options.eps())};
      float* param = p.data_ptr<float>();
      const float* grad = p.grad().data_ptr<float>();
      float* exp_avg = state.exp_avg().data_ptr<float>();
      float* exp_avg_sq = state.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
        AdamWChunk(param, grad, exp_avg, exp_avg_sq, begin, end, scalars);
      });
      // Written through a raw pointer: count it as an in-place update, so whatever is keyed
      // on the version counter (the feature encoder's cached GEMM weights) sees the change.
      p.unsafeGetTensorImpl()->bump_version();
    }
  }
  return loss;
}

double GradNorm(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  double sum_sq = 0;
  std::vector<torch::Tensor> elsewhere;  // squared norms computed by tensor ops
  for (const torch::Tensor& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (!g.device().is_cpu() || !g.is_contiguous() || g.scalar_type() != torch::kFloat) {
      elsewhere.push_back(g.to(torch::kDouble).pow(2).sum());
      continue;
    }
    const float* data = g.data_ptr<float>();
    sum_sq += at::parallel_reduce(
        0, g.numel(), kGrain, 0.0,
        [&](int64_t begin, int64_t end, double partial) {
          return partial + SumOfSquaresChunk(data, begin, end);
        },
        [](double a, double b) { return a + b; });
  }
  if (!elsewhere.empty()) sum_sq += torch::stack(elsewhere).sum().item<double>();
  return std::sqrt(sum_sq);
}

StepResult ScaledClippedStep(FusedAdamW& optimizer, const std::vector<torch::Tensor>& params,
                             DynamicLossScaler& scaler, double max_grad_norm) {
  StepResult result;
  const double scaled_norm = GradNorm(params);
  result.taken = std::isfinite(scaled_norm);
  if (result.taken) {
    const double inv_scale = 1.0 / scaler.scale();
    result.grad_norm = scaled_norm * inv_scale;
    // torch.nn.utils.clip_grad_norm_'s rule.
    double clip = 1.0;
    if (max_grad_norm > 0) clip = std::min(1.0, max_grad_norm / (result.grad_norm + 1e-6));
    optimizer.set_grad_scale(inv_scale * clip);
    optimizer.step();
  } else {
    result.grad_norm = std::numeric_limits<double>::infinity();
  }
  scaler.Update(!result.taken);
  return result;
}

}  // namespace ftune::train
